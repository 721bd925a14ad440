"""Stage 7, evaluation of a policy on its own."""

from ultrarl.evaluate.evaluation import EvalResult, evaluate_agent

__all__ = ["EvalResult", "evaluate_agent"]
