"""What guidance does to a rollout step: ULTRA's policy modulation, decided in one place.

At a state that matches a guidance-table entry:
- ULTRA-A executes the entry's advice (with some probability, annealed to 0 by default): its
  *plan*, the suggested action and the further actions the advisor gave, one per step, so that
  advice given once at identification lasts beyond the one state it was given at;
- ULTRA-R trains on r_env + β·r_LLM, where r_LLM rates the action the agent takes now (by its
  distance to the suggestion, relative to the rated action's), added only where the agent's own
  action ran, never to executed advice;
- ULTRA-RA does both.
Trust (ours, ``trust_advice``): advice earns its influence from what it does. After each
rollout, the learner reports whether each executed plan beat the agent's own expected return
(``record_outcome``); a table entry whose plan never did in ``trust_trials`` tries is no longer
executed, only executed steps that beat it are imitated, and (ULTRA-RA) an entry's rating shapes
the reward only once its plan has beaten the agent. Also ours: a live advisor (the
oracle's expert asked at the visited state, ``hold_steps`` further steps after each override).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel, ConfigDict, Field

from ultrarl.envs.actions import rate_action
from ultrarl.guidance.table import GuidanceTable
from ultrarl.methods import Method

TRUST_FLOOR = 0.1  # the smallest advantage that counts as beating the agent, in mean |r| per step
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
        None, ge=0, description="a live advisor's override keeps it in control for this many further steps "
                                "(ours; 0: off; unset: the method's default; a table's advice lasts its plan)"
    )
    trust_advice: bool | None = Field(
        None, description="imitate executed advice only where its return beat the agent's value estimate, and stop "
                          "executing a table entry whose advice never did in --trust-trials tries (ours; unset: "
                          "the method's default)"
    )
    trust_trials: int = Field(3, gt=0, description="executions of a table entry's advice before it is dropped if "
                                                   "none beat the agent's value estimate")
    trust_margin: float = Field(0.5, ge=0, description="advice beats the agent when its advantage exceeds this "
                                                        "fraction of |the agent's value| there (plus 0.1 mean |r| per "
                                                        "step of the explained episodes)")

    def for_method(self, method: Method) -> ModulationSettings:
        """These settings with every unset one taken from the method's registry entry: the one
        place where the CLI, the bench and the Python API get a method's defaults."""
        return self.model_copy(update={
            "hold_steps": method.hold_steps if self.hold_steps is None else self.hold_steps,
            "trust_advice": method.trust_advice if self.trust_advice is None else self.trust_advice,
        })


@dataclass
class StepAdvice:
    """What modulation decided for one vectorised step."""

    matched: np.ndarray  # (n_envs,) bool: a suggestion exists (a table match, or inside a guided segment)
    suggested: np.ndarray  # (n_matched, ...) suggestions at the matched states, environment units
    override: np.ndarray  # (n_envs,) bool: the suggestion is executed
    implicit: np.ndarray  # (n_envs,) rating of the agent's own action; 0 where unmatched or overridden
    starts: np.ndarray  # (n_envs,) bool: an executed plan (a guided segment) starts at this step
    entries: np.ndarray  # (n_envs,) the table entry whose advice applies (-1: none)


@dataclass
class ModulationStats:
    """Counts over the current rollout and over the whole run."""

    steps: int = 0
    matched: int = 0
    overridden: int = 0
    implicit_reward_sum: float = 0.0
    shaped: int = 0
    total: dict[str, float] = field(default_factory=lambda: {
        "steps": 0, "matched": 0, "overridden": 0, "plans_executed": 0, "plans_beat_agent": 0,
        "imitated_steps": 0, "not_imitated_steps": 0})

    def start_rollout(self) -> None:
        self.steps = self.matched = self.overridden = self.shaped = 0
        self.implicit_reward_sum = 0.0

    def add(self, advice: StepAdvice) -> None:
        self.steps += len(advice.matched)
        self.matched += int(advice.matched.sum())
        self.overridden += int(advice.override.sum())
        self.total["plans_executed"] += int(advice.starts.sum())
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

    :param table: the guidance table (where to act, what to do, how the own action rates)
    :param override_actions: execute advice at matched states (ULTRA-A, -RA)
    :param shape_rewards: add β·r_LLM where the agent's own action ran at a matched state (ULTRA-R, -RA)
    :param settings: probabilities, weights and schedules, the method's defaults filled in
        (``ModulationSettings.for_method``)
    :param advisor: a live advisor (the oracle's expert); None: the table's advice
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
        # Per environment: steps left in its guided segment, the entry it follows and where in its plan.
        self.segment_left: np.ndarray | None = None
        self.segment_entry: np.ndarray | None = None
        self.segment_position: np.ndarray | None = None
        # Per table entry: executions of its advice, and how many beat the agent's own expected return.
        self.trials = np.zeros(len(table), dtype=np.int64)
        self.wins = np.zeros(len(table), dtype=np.int64)

    @property
    def beta_absolute(self) -> float:
        return self.settings.beta * self.table.reward_scale

    @property
    def trusts(self) -> bool:
        """Advice earns its influence (the safeguard): only a table's advice, never a live expert's."""
        return bool(self.settings.trust_advice) and self.advisor is None

    @property
    def trust_floor(self) -> float:
        """The smallest advantage that beats the agent, in raw reward units. Above it, advice must
        beat the agent by ``trust_margin`` of |its value| there: the agent's own return is noisy,
        and a stochastic policy's value counts its exploration's cost, which any calmer action
        sequence beats without being better advice."""
        return TRUST_FLOOR * self.table.reward_scale

    def override_prob(self, progress_remaining: float) -> float:
        p = self.settings.override_prob
        return p * min(1.0, max(0.0, progress_remaining)) if self.settings.anneal_override else p

    @property
    def imitates(self) -> bool:
        """The supervised term runs: it teaches the suggestions, which only a method that
        executes them (ULTRA-A, -RA, the oracles) follows; ULTRA-R learns from the ratings alone."""
        return self.override_actions and self.settings.bc_weight > 0

    def bc_weight(self, progress_remaining: float) -> float:
        if not self.imitates:
            return 0.0
        w = self.settings.bc_weight
        return w * min(1.0, max(0.0, progress_remaining)) if self.settings.bc_anneal else w

    def trusted(self, entries: np.ndarray) -> np.ndarray:
        """Whether each entry's advice may still be executed (-1: no entry)."""
        index = np.maximum(entries, 0)
        ok = (self.trials[index] < self.settings.trust_trials) | (self.wins[index] > 0) if self.trusts else True
        return (entries >= 0) & ok

    def _earned(self, entries: np.ndarray) -> np.ndarray:
        """1 where an entry's rating may shape the reward: always without trust, and with it once
        the entry's own advice has beaten the agent (an advisor whose plans never beat the agent
        there has not shown that its ratings mean anything either). ULTRA-R executes no advice,
        so its ratings cannot earn trust this way and always shape."""
        if not (self.trusts and self.override_actions):
            return np.ones(len(entries))
        return (self.wins[np.maximum(entries, 0)] > 0).astype(np.float64)

    def record_outcome(self, entries: np.ndarray, beat_agent: np.ndarray) -> None:
        """The learner's verdict on executed plans (one per entry in ``entries``)."""
        np.add.at(self.trials, entries, 1)
        np.add.at(self.wins, entries, beat_agent.astype(np.int64))
        self.stats.total["plans_beat_agent"] += int(beat_agent.sum())

    def record_imitation(self, imitated: int, not_imitated: int) -> None:
        self.stats.total["imitated_steps"] += imitated
        self.stats.total["not_imitated_steps"] += not_imitated

    def trust_report(self) -> dict[str, int]:
        """How much advice was trusted: entries never executed, executed and kept, and dropped
        because their advice never beat the agent."""
        executed = self.trials > 0
        dropped = ~self.trusted(np.arange(len(self.trials)))
        return {"entries": len(self.trials), "entries_never_executed": int((~executed).sum()),
                "entries_kept": int((executed & ~dropped).sum()), "entries_dropped": int(dropped.sum())}

    def advise(
        self, raw_obs: np.ndarray, own_actions: np.ndarray, action_space: spaces.Space, progress_remaining: float
    ) -> StepAdvice:
        """Match the states, start or continue plans, draw the overrides, rate the own actions."""
        advice = self._decide(raw_obs, own_actions, action_space, progress_remaining)
        self.stats.add(advice)
        return advice

    def _decide(
        self, raw_obs: np.ndarray, own_actions: np.ndarray, action_space: spaces.Space, progress_remaining: float
    ) -> StepAdvice:
        n = len(raw_obs)
        held = self._held(n)
        matches = self.table.match(raw_obs)
        matched = (matches >= 0) | held
        implicit = np.zeros(n, dtype=np.float32)
        starts = np.zeros(n, dtype=bool)
        if not matched.any():  # no advisor call, no override draw
            return StepAdvice(matched, self.table.suggested_actions[:0], held.copy(), implicit, starts, matches)
        if self.override_actions:
            drawn = self.rng.random(n) < self.override_prob(progress_remaining)
            starts = matched & ~held & self.trusted(matches) & drawn
            self._start_segments(starts, matches)
        override = held | starts
        entries = np.where(held, self.segment_entry, matches)  # type: ignore[arg-type]
        if self.advisor is not None:
            suggested = np.asarray(self.advisor(raw_obs[matched]))
            ratings = rate_action(own_actions[matched], suggested, action_space, self.equivalent_actions)
        else:
            positions = np.where(override, self.segment_position, 0)[matched]  # type: ignore[arg-type]
            suggested = self.table.plan_actions(entries[matched], positions)
            ratings = self.table.rate(entries[matched], own_actions[matched], action_space)
        self._advance(override)
        if self.shape_rewards:
            implicit[matched] = ratings * self._earned(entries[matched])
            implicit[override] = 0.0  # the rating is of the agent's own action, never of executed advice
        return StepAdvice(matched, suggested, override, implicit, starts, entries)

    def _held(self, n_envs: int) -> np.ndarray:
        """Which envs are inside a guided segment at this step."""
        if self.segment_left is None or len(self.segment_left) != n_envs:
            self.segment_left = np.zeros(n_envs, dtype=np.int64)
            self.segment_entry = np.full(n_envs, -1, dtype=np.int64)
            self.segment_position = np.zeros(n_envs, dtype=np.int64)
        return self.segment_left > 0

    def _start_segments(self, starts: np.ndarray, entries: np.ndarray) -> None:
        """A segment lasts the entry's plan, or 1 + ``hold_steps`` steps of a live advisor."""
        assert self.segment_left is not None and self.segment_entry is not None and self.segment_position is not None
        assert self.table.plan_lengths is not None
        length = 1 + (self.settings.hold_steps or 0) if self.advisor is not None else \
            self.table.plan_lengths[np.maximum(entries, 0)]
        self.segment_left[starts] = np.broadcast_to(length, starts.shape)[starts]
        self.segment_entry[starts] = entries[starts]
        self.segment_position[starts] = 0

    def _advance(self, override: np.ndarray) -> None:
        assert self.segment_left is not None and self.segment_position is not None
        self.segment_left[override] -= 1
        self.segment_position[override] += 1

    def end_episodes(self, dones: np.ndarray) -> None:
        """A guided segment ends with its episode."""
        if self.segment_left is not None:
            self.segment_left[np.asarray(dones, dtype=bool)] = 0

    def state(self) -> dict[str, object]:
        segments = None if self.segment_left is None else {
            "left": self.segment_left.tolist(), "entry": self.segment_entry.tolist(),  # type: ignore[union-attr]
            "position": self.segment_position.tolist()}  # type: ignore[union-attr]
        return {"totals": dict(self.stats.total), "rng": self.rng.bit_generator.state, "segments": segments,
                "trials": self.trials.tolist(), "wins": self.wins.tolist()}

    def load_state(self, state: dict[str, object]) -> None:
        self.stats.total.update(state["totals"])  # type: ignore[arg-type]
        self.rng.bit_generator.state = state["rng"]
        segments = state.get("segments")
        if isinstance(segments, dict):
            self.segment_left = np.asarray(segments["left"], dtype=np.int64)
            self.segment_entry = np.asarray(segments["entry"], dtype=np.int64)
            self.segment_position = np.asarray(segments["position"], dtype=np.int64)
        self.trials = np.asarray(state.get("trials", self.trials), dtype=np.int64)
        self.wins = np.asarray(state.get("wins", self.wins), dtype=np.int64)
