"""What guidance does to a rollout step: ULTRA's policy modulation, decided in one place.

At a state that matches a guidance-table entry:
- ULTRA-A executes the suggested action (with some probability, annealed to 0 by default);
- ULTRA-R trains on r_env + β·r_LLM, where r_LLM rates the agent's *own* action: it is added
  only where the agent's own action ran, never to an executed suggestion;
- ULTRA-RA does both.
Beyond the paper (ours, each a setting, off when its weight or length is 0): a supervised term
that pulls the policy towards the suggestions it executes (``bc_weight``, annealed; ULTRA-A and
-RA only); a live advisor (the oracle's expert asked at the visited state instead of the
table's nearest entry); and guided segments (``hold_steps``): an override that starts at a
matched state keeps the advisor in control for that many further steps (the table's nearest
entry at any distance when there is no live advisor), so advice reaches the states the agent
never visits on its own, the ones a stuck agent needs (on MountainCar, the pumping swing up the
hill). A segment ends with its episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field

from ultrarl.envs.actions import rate_action
from ultrarl.guidance.table import GuidanceTable

# An advisor maps a batch of raw observations to suggested actions (environment units).
Advisor = Callable[[np.ndarray], np.ndarray]


class ModulationSettings(BaseModel):
    """ULTRA's knobs; every default is a documented choice (docs/METHOD.md)."""

    model_config = ConfigDict(extra="forbid")

    override_prob: float = Field(1.0, ge=0.0, le=1.0, description="probability of executing the suggested action")
    anneal_override: bool = Field(True, description="anneal the override probability linearly to 0")
    beta: float = Field(0.5, ge=0.0, description="implicit-reward weight, in units of mean |r| per step")
    bc_weight: float = Field(
        1.0, ge=0.0, description="weight of the supervised term towards the executed suggestions (ours; methods that "
                    "execute suggestions only; 0: off)"
    )
    bc_anneal: bool = Field(True, description="anneal the supervised term linearly to 0")
    bc_memory: int = Field(20_000, gt=0, description="advised states kept for the supervised term")
    live_advisor: bool = Field(
        True, description="oracle: ask the expert at the visited state, not at the table's nearest entry (ours)"
    )
    hold_steps: int | None = Field(
        None, ge=0, description="an override keeps the advisor in control for this many further steps "
                                "(ours; 0: off; unset: the method's default)"
    )


@dataclass
class StepAdvice:
    """What modulation decided for one vectorised step."""

    matched: np.ndarray  # (n_envs,) bool: a suggestion exists (a table match, or inside a guided segment)
    suggested: np.ndarray  # (n_matched, ...) suggestions at the matched states, environment units
    override: np.ndarray  # (n_envs,) bool: the suggestion is executed
    implicit: np.ndarray  # (n_envs,) rating of the agent's own action; 0 where unmatched or overridden


@dataclass
class ModulationStats:
    """Counts over the current rollout and over the whole run."""

    steps: int = 0
    matched: int = 0
    overridden: int = 0
    implicit_reward_sum: float = 0.0
    shaped: int = 0
    total: dict[str, float] = field(default_factory=lambda: {"steps": 0, "matched": 0, "overridden": 0})

    def start_rollout(self) -> None:
        self.steps = self.matched = self.overridden = self.shaped = 0
        self.implicit_reward_sum = 0.0

    def add(self, advice: StepAdvice) -> None:
        self.steps += len(advice.matched)
        self.matched += int(advice.matched.sum())
        self.overridden += int(advice.override.sum())
        shaped = advice.matched & ~advice.override
        self.shaped += int(shaped.sum())
        self.implicit_reward_sum += float(advice.implicit[shaped].sum())

    def end_rollout(self) -> dict[str, float]:
        self.total["steps"] += self.steps
        self.total["matched"] += self.matched
        self.total["overridden"] += self.overridden
        steps = max(self.steps, 1)
        return {
            "refine/match_rate": self.matched / steps,
            "refine/override_rate": self.overridden / steps,
            "refine/implicit_reward_mean": self.implicit_reward_sum / self.shaped if self.shaped else 0.0,
        }

    def totals(self) -> dict[str, float]:
        steps = max(self.total["steps"], 1)
        return {**self.total, "match_rate": self.total["matched"] / steps,
                "override_rate": self.total["overridden"] / steps}


class Modulation:
    """A guidance table, the method's switches and the settings: what happens at each step.

    :param table: the guidance table (where to act, what to suggest, how the own action rates)
    :param override_actions: execute suggestions at matched states (ULTRA-A, -RA)
    :param shape_rewards: add β·r_LLM where the agent's own action ran at a matched state (ULTRA-R, -RA)
    :param settings: probabilities, weights and schedules
    :param advisor: a live advisor (the oracle's expert); None: the table's suggestion
    :param seed: seed of the override draws
    :param equivalent_actions: discrete actions that act alike (``envs.actions.equivalent_actions``):
        the live advisor's rating of the agent's own action counts them as one
    """

    def __init__(
        self,
        table: GuidanceTable,
        override_actions: bool,
        shape_rewards: bool,
        settings: ModulationSettings | None = None,
        advisor: Advisor | None = None,
        seed: int = 0,
        equivalent_actions: tuple[int, ...] | None = None,
    ) -> None:
        self.table = table
        self.equivalent_actions = equivalent_actions
        self.override_actions = override_actions
        self.shape_rewards = shape_rewards
        self.settings = settings or ModulationSettings()
        self.advisor = advisor if self.settings.live_advisor else None
        self.rng = np.random.default_rng(seed)
        self.stats = ModulationStats()
        self.held_steps_left: np.ndarray | None = None  # (n_envs,) steps left in each env's guided segment

    @property
    def beta_absolute(self) -> float:
        return self.settings.beta * self.table.reward_scale

    def override_prob(self, progress_remaining: float) -> float:
        p = self.settings.override_prob
        return p * min(1.0, max(0.0, progress_remaining)) if self.settings.anneal_override else p

    @property
    def imitates(self) -> bool:
        """The supervised term runs: it teaches the suggestions, which only a method that
        executes them (ULTRA-A, -RA, the oracle) follows; ULTRA-R learns from the ratings alone."""
        return self.override_actions and self.settings.bc_weight > 0

    def bc_weight(self, progress_remaining: float) -> float:
        if not self.imitates:
            return 0.0
        w = self.settings.bc_weight
        return w * min(1.0, max(0.0, progress_remaining)) if self.settings.bc_anneal else w

    def advise(
        self, raw_obs: np.ndarray, own_actions: np.ndarray, action_space: spaces.Space, progress_remaining: float
    ) -> StepAdvice:
        """Match the states, pick the suggestions, draw the overrides, rate the own actions."""
        advice = self._decide(raw_obs, own_actions, action_space, progress_remaining)
        self.stats.add(advice)
        return advice

    def _decide(
        self, raw_obs: np.ndarray, own_actions: np.ndarray, action_space: spaces.Space, progress_remaining: float
    ) -> StepAdvice:
        n = len(raw_obs)
        held = self._held(n)
        matches, nearest = self.table.lookup(raw_obs)
        matched = (matches >= 0) | held
        implicit = np.zeros(n, dtype=np.float32)
        override = held.copy()
        if not matched.any():  # no advisor call, no override draw
            return StepAdvice(matched, self.table.suggested_actions[:0], override, implicit)
        if self.advisor is not None:
            suggested = np.asarray(self.advisor(raw_obs[matched]))
            ratings = rate_action(own_actions[matched], suggested, action_space, self.equivalent_actions)
        else:
            entries = np.where(held, nearest, matches)[matched]
            suggested = self.table.suggested_actions[entries]
            ratings = self.table.implicit_rewards[entries]
        if self.override_actions:
            starts = matched & ~held & (self.rng.random(n) < self.override_prob(progress_remaining))
            override |= starts
            self._start_segments(starts)
        if self.shape_rewards:
            implicit[matched] = ratings
            implicit[override] = 0.0  # the rating is of the agent's own action, never of a suggestion
        return StepAdvice(matched, suggested, override, implicit)

    def _held(self, n_envs: int) -> np.ndarray:
        """Which envs are inside a guided segment at this step; counts the step."""
        if self.held_steps_left is None or len(self.held_steps_left) != n_envs:
            self.held_steps_left = np.zeros(n_envs, dtype=np.int64)
        held = self.held_steps_left > 0
        self.held_steps_left[held] -= 1
        return held

    def _start_segments(self, starts: np.ndarray) -> None:
        if self.settings.hold_steps and self.held_steps_left is not None:
            self.held_steps_left[starts] = self.settings.hold_steps

    def end_episodes(self, dones: np.ndarray) -> None:
        """A guided segment ends with its episode."""
        if self.held_steps_left is not None:
            self.held_steps_left[np.asarray(dones, dtype=bool)] = 0

    def state(self) -> dict[str, object]:
        held = None if self.held_steps_left is None else self.held_steps_left.tolist()
        return {"totals": dict(self.stats.total), "rng": self.rng.bit_generator.state, "held_steps_left": held}

    def load_state(self, state: dict[str, object]) -> None:
        self.stats.total = dict(state["totals"])  # type: ignore[arg-type]
        self.rng.bit_generator.state = state["rng"]
        held = state.get("held_steps_left")
        self.held_steps_left = None if held is None else np.asarray(held, dtype=np.int64)
