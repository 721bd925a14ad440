"""Stage 2, interpretation: trajectories told in words, compressed to a token budget."""

from ultrarl.interpret.compress import compress_episode
from ultrarl.interpret.describer import StateDescriber
from ultrarl.interpret.specs import EnvSpec, Quantity, spec_for

__all__ = ["EnvSpec", "Quantity", "StateDescriber", "compress_episode", "spec_for"]
