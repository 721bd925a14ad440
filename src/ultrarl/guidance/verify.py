"""Verified suggestions (``--verify``, our extension): check each suggestion before it enters the
guidance table, by restoring its critical state and comparing short rollouts (the advice
measurement of ``ultrarl fidelity``, ``ultrarl.explain.fidelity``, with its own M, H and z).

For a critical state s with the agent's action a and the suggestion a*, M rollouts of H steps
start with a* and then follow the agent's policy, and M start with a and then follow the policy,
pairwise with common random numbers. A suggestion is kept only when the mean paired gain
exceeds ``z`` standard errors (a one-sided test; M >= 16 by default, so the standard error is
worth its name); the others are dropped and counted. The implicit reward rates the agent's own
action (it shapes only transitions where that action ran), so a kept suggestion sets it to the
measured loss of the own action, −tanh(gain / (H·reward scale)), which is negative: the own
action is discouraged, the suggestion never penalised. With a weak LLM, guidance can then only
point at actions that did better, from the same state, under the agent's own policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from stable_baselines3 import PPO

from ultrarl.envs.factory import make_env
from ultrarl.envs.rollout import Trajectory
from ultrarl.explain.explainer import CriticalState
from ultrarl.explain.fidelity import advice_gains, significant


class VerifySettings(BaseModel):
    """Checking suggestions by short rollouts from their states (``--verify``, ours)."""

    model_config = ConfigDict(extra="forbid")
    cli_prefix: ClassVar[str] = "verify-"

    enabled: bool = Field(False, description="check each suggestion before it enters the table",
                          json_schema_extra={"flag": "verify"})
    samples: int = Field(16, ge=2, description="M, paired rollouts per suggestion")
    horizon: int = Field(20, gt=0, description="H, steps per rollout")
    z: float = Field(2.0, ge=0, description="keep a suggestion when its mean gain exceeds z standard errors")


@dataclass
class VerifyReport:
    checked: int = 0
    kept: int = 0
    dropped: int = 0
    no_snapshot: int = 0
    gaps: list[float] = field(default_factory=list)  # suggested minus agent, mean short return

    def to_dict(self) -> dict[str, float]:
        return {"checked": self.checked, "kept": self.kept, "dropped": self.dropped,
                "no_snapshot": self.no_snapshot,
                "mean_gap": float(np.mean(self.gaps)) if self.gaps else 0.0}


def verify_suggestions(
    states: list[CriticalState],
    trajectories: list[Trajectory],
    agent: PPO,
    env_id: str,
    settings: VerifySettings,
    reward_scale: float = 1.0,
    seed: int = 0,
) -> tuple[list[CriticalState], VerifyReport]:
    """The suggestions that beat the agent's own action from the same state, and a report."""
    by_episode = {t.episode: t for t in trajectories}
    report = VerifyReport()
    kept: list[CriticalState] = []
    env = make_env(env_id)
    try:
        for index, state in enumerate(states):
            trajectory = by_episode[state.episode]
            if trajectory.snapshots is None:
                report.no_snapshot += 1
                kept.append(state)
                continue
            snapshot = trajectory.snapshots[state.step]
            report.checked += 1
            # Common random numbers: sample i of both arms starts from the same env seed.
            gains = advice_gains(env, agent, snapshot, state, settings.samples, settings.horizon, seed + 1000 * index)
            gap = float(gains.mean())
            report.gaps.append(gap)
            if not significant(gains, settings.z):
                report.dropped += 1
                continue
            report.kept += 1
            implicit = -float(np.tanh(gap / (settings.horizon * max(reward_scale, 1e-8))))
            kept.append(state.model_copy(update={
                "implicit_reward": implicit,
                "rationale": f"{state.rationale} [verified: +{gap:.2f} return over {settings.horizon} steps]",
            }))
    finally:
        env.close()
    return kept, report
