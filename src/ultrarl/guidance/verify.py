"""Verified suggestions (``--verify``, our extension): check each suggestion before it enters the
guidance table, by restoring its critical state and comparing short rollouts.

For a critical state s with the agent's action a and the suggestion a*, M rollouts of H steps
start with a* and then follow the agent's policy, and M start with a and then follow the policy.
A suggestion whose mean short-horizon return is not higher is dropped (and counted). A kept
suggestion's implicit reward is replaced by the measured gap, −tanh(gap / (H·reward scale)):
the agent's own action rated by how much return it gave up. With a weak LLM, guidance can then
only point at actions that did better, from the same state, under the agent's own policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from stable_baselines3 import PPO

from ultrarl.envs.factory import make_env
from ultrarl.envs.rollout import Trajectory, env_action
from ultrarl.envs.snapshot import restore_snapshot
from ultrarl.explain.explainer import CriticalState


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


def _short_return(env, agent: PPO, snapshot, first_action, horizon: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    env.reset(seed=seed)
    agent.set_random_seed(seed)  # common random numbers: both arms' sample i draw alike
    obs = restore_snapshot(env, snapshot)
    total = 0.0
    action = first_action
    for _ in range(horizon):
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
        action, _ = agent.predict(obs, deterministic=False)
    return total


def verify_suggestions(
    states: list[CriticalState],
    trajectories: list[Trajectory],
    agent: PPO,
    env_id: str,
    samples: int = 4,
    horizon: int = 20,
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
            seeds = [seed + 1000 * index + i for i in range(samples)]
            suggested = np.mean([_short_return(env, agent, snapshot, env_action(state.suggested_action), horizon, s)
                                 for s in seeds])
            own = np.mean([_short_return(env, agent, snapshot, env_action(state.agent_action), horizon, s)
                           for s in seeds])
            gap = float(suggested - own)
            report.gaps.append(gap)
            if gap <= 0:
                report.dropped += 1
                continue
            report.kept += 1
            implicit = -float(np.tanh(gap / (horizon * max(reward_scale, 1e-8))))
            kept.append(state.model_copy(update={
                "implicit_reward": implicit,
                "rationale": f"{state.rationale} [verified: +{gap:.2f} return over {horizon} steps]",
            }))
    finally:
        env.close()
    return kept, report
