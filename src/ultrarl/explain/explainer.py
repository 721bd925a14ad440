"""Stage 3+4, identify and advise: one LLM call per episode returns critical steps, suggested
actions and implicit rewards (the one-pass mode of METHOD.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from ultrarl.envs.rollout import Trajectory
from ultrarl.errors import LLMUnavailableError
from ultrarl.explain.prompts import PROMPT_VERSION, EpisodePrompt, build_episode_prompt, return_so_far
from ultrarl.explain.validation import ValidatedAnswer, validate_answer
from ultrarl.interpret.describer import StateDescriber
from ultrarl.llm.client import LLMClient
from ultrarl.run_dir import write_text_atomic


class CriticalState(BaseModel):
    """One line of explanations.jsonl."""

    episode: int
    step: int
    rationale: str
    suggested_action: int | list[float]
    implicit_reward: float
    agent_action: int | list[float]
    return_so_far: float
    state_text: str
    suggested_action_text: str
    agent_action_text: str
    frame: str | None = None  # picture of the state, relative to the run directory (--save-frames)
    # The advisor's further actions after the suggested one, one per step: refinement executes the
    # suggestion and then these from a matched state (empty: the suggestion alone).
    plan: list[int | list[float]] = []


def as_json_action(action: np.ndarray) -> int | list[float]:
    arr = np.asarray(action)
    return int(arr.item()) if arr.ndim == 0 else [float(v) for v in arr.ravel()]


class Explainer:
    def __init__(self, llm: LLMClient, describer: StateDescriber, k: int = 3, token_budget: int = 3000,
                 plan_steps: int = 1) -> None:
        self.llm = llm
        self.describer = describer
        self.k = k
        self.token_budget = token_budget
        self.plan_steps = plan_steps
        self.cache_keys: dict[int, str] = {}  # episode -> LLM cache key, for the run's manifest
        self._fatal: LLMUnavailableError | None = None  # once set, no further question is sent

    def prompt_for(self, trajectory: Trajectory) -> EpisodePrompt:
        return build_episode_prompt(trajectory, self.describer, self.llm.count_tokens, self.k, self.token_budget,
                                    self.plan_steps)

    def explain_episode(self, trajectory: Trajectory) -> list[CriticalState]:
        prompt = self.prompt_for(trajectory)
        self.cache_keys[trajectory.episode] = self.llm.key_for(prompt.messages, prompt.schema, PROMPT_VERSION,
                                                               prompt.shared_prefix)

        def validate(value: Any) -> ValidatedAnswer:
            return validate_answer(value, trajectory.length, self.describer.action_space,
                                   self.describer.spec.action_names, self.k, self.plan_steps)

        if self._fatal is not None:
            raise self._fatal
        try:
            answer = self.llm.ask_json(prompt.messages, prompt.schema, validate, PROMPT_VERSION, prompt.shared_prefix)
        except LLMUnavailableError as exc:
            self._fatal = exc
            raise
        if answer is None:
            return []
        self.llm.ledger.add(dropped_fields=answer.dropped, copied_fields=answer.copied, clipped_fields=answer.clipped)
        return [self._record(trajectory, advice.step, advice) for advice in answer.advice]

    def _record(self, trajectory: Trajectory, step: int, advice: Any) -> CriticalState:
        obs = trajectory.observations[step]
        agent_action = trajectory.actions[step]
        return CriticalState(
            episode=trajectory.episode,
            step=step,
            rationale=advice.rationale,
            suggested_action=advice.suggested_action,
            plan=list(advice.plan),
            implicit_reward=advice.implicit_reward,
            agent_action=as_json_action(agent_action),
            return_so_far=return_so_far(trajectory, step),
            state_text=self.describer.describe_state(obs, trajectory.observations[step - 1] if step > 0 else None),
            suggested_action_text=self.describer.describe_action(np.asarray(advice.suggested_action)),
            agent_action_text=self.describer.describe_action(agent_action),
        )

    def explain(
        self, trajectories: list[Trajectory], on_episode: Callable[[int, list[CriticalState]], None] | None = None
    ) -> list[CriticalState]:
        """All episodes; requests run in parallel up to the backend's concurrency."""
        workers = max(1, min(self.llm.backend.max_concurrency, len(trajectories)))
        results: dict[int, list[CriticalState]] = {}
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self.explain_episode, t): t.episode for t in trajectories}
            try:
                for future in futures:  # in submission order, so progress and output are stable
                    episode = futures[future]
                    results[episode] = future.result()
                    if on_episode is not None:
                        on_episode(episode, results[episode])
            except BaseException:
                # A fatal LLM error (bad credentials, unreachable server): ask nothing more.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        return [state for t in trajectories for state in results[t.episode]]


def write_explanations(states: list[CriticalState], path: Path) -> None:
    write_text_atomic(path, "".join(state.model_dump_json() + "\n" for state in states))


def read_explanations(path: Path) -> list[CriticalState]:
    with open(path) as f:
        return [CriticalState.model_validate(json.loads(line)) for line in f if line.strip()]
