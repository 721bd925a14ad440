"""How good is an advisor? Counterfactual rollouts from the snapshots of its critical states.

For a critical state (a snapshot of step t of an explained episode) every measurement compares
arms that restart from the same snapshot, M times each, sample i of every arm with the same
environment seed and the same policy seed (common random numbers), over H steps:

- **criticality** (StateMask's and RICE's fidelity test): the return of the agent's own action
  followed by its policy, minus the return of K uniformly random actions followed by its policy.
  The same drop is measured at a uniformly random step of the same episode (the control); an
  advisor's criticality is the mean, over its states, of (drop at its state - drop at the control).
- **advice** (advisors that suggest an action: an LLM, the expert): the return of the suggestion
  followed by the policy, minus the return of the agent's own action followed by it. A suggestion
  *helps* when its mean paired gain exceeds z standard errors; ``--verify`` keeps exactly those.
- **a random suggestion** (every advisor, the control of the advice): the same with one uniformly
  random action instead of the suggestion, with the same pairs' seeds. It is what an advisor
  without insight would gain at these states; a suggesting advisor's *gain over random* is the
  mean, over its states, of (advice gain - random gain).

Per-state figures and per-advisor summaries with 95% percentile-bootstrap CIs over states.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from stable_baselines3.common.base_class import BaseAlgorithm

from ultrarl.envs.factory import make_env
from ultrarl.envs.rollout import Trajectory, env_action
from ultrarl.envs.snapshot import Snapshot, restore_snapshot
from ultrarl.explain.explainer import CriticalState

BOOTSTRAP_REPS = 10_000


class FidelitySettings(BaseModel):
    """The counterfactual rollouts of ``ultrarl fidelity``."""

    model_config = ConfigDict(extra="forbid")
    cli_prefix: ClassVar[str] = "fidelity-"

    samples: int = Field(16, ge=2, description="M, paired rollouts per state and arm")
    horizon: int = Field(50, gt=0, description="H, steps per rollout (environment steps)")
    perturb_steps: int = Field(5, gt=0, description="K, random actions that replace the agent's at a state (steps)")
    z: float = Field(2.0, ge=0, description="a suggestion helps when its mean gain exceeds z standard errors")
    follow_steps: int = Field(1, gt=0, description="A, steps the advice is followed before the agent takes over: "
                                                   "the expert asked at each visited state, an LLM's suggestion "
                                                   "held, the control's random actions drawn afresh (steps)")


# An arm of a paired comparison: the actions that start the rollout of pair ``seed``; an entry
# may be a function of the observation (an advisor asked at the state the rollout reached).
Arm = Callable[[int], Sequence[Any]]
# An advisor maps a batch of raw observations to actions (as ``refine.modulation.Advisor``).
Advisor = Callable[[np.ndarray], np.ndarray]


@dataclass
class StateFidelity:
    """The measurements at one critical state (one line of fidelity.jsonl).

    :param drop: criticality, mean return lost when K random actions replace the agent's
    :param control_step: a uniformly random step of the same episode
    :param control_drop: the same drop at ``control_step``
    :param advice_gain: mean return gained by executing the suggestion (None: no suggestion)
    :param advice_stderr: its standard error over the M pairs
    :param helps: the gain exceeds z standard errors
    :param random_gain: mean return gained by a uniformly random action instead (the control)
    """

    episode: int
    step: int
    drop: float
    control_step: int
    control_drop: float
    advice_gain: float | None = None
    advice_stderr: float | None = None
    helps: bool | None = None
    random_gain: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout_return(
    env: gym.Env, agent: BaseAlgorithm, snapshot: Snapshot, first_actions: Sequence[Any], horizon: int, seed: int
) -> float:
    """Return over ``horizon`` steps from ``snapshot``: ``first_actions`` first, then the agent's
    stochastic policy. ``seed`` fixes the environment and the policy's draws (common random numbers)."""
    env.reset(seed=seed)
    agent.set_random_seed(seed)
    obs = restore_snapshot(env, snapshot)
    total = 0.0
    for step in range(horizon):
        if step < len(first_actions):
            action = first_actions[step]
            if callable(action):
                action = action(obs)
        else:
            action, _ = agent.predict(obs, deterministic=False)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    return total


def paired_gains(
    env: gym.Env, agent: BaseAlgorithm, snapshot: Snapshot, first: Arm, second: Arm, samples: int, horizon: int,
    seed: int,
) -> np.ndarray:
    """Per pair i (seed ``seed + i`` for both arms): return of arm ``first`` minus return of ``second``."""
    return np.asarray([
        rollout_return(env, agent, snapshot, first(seed + i), horizon, seed + i)
        - rollout_return(env, agent, snapshot, second(seed + i), horizon, seed + i)
        for i in range(samples)
    ])


def fixed_arm(*actions: Any) -> Arm:
    return lambda _seed: [env_action(a) for a in actions]


def advisor_arm(advisor: Advisor, steps: int) -> Arm:
    """The advisor in control for ``steps`` steps, asked at each state the rollout reaches."""

    def ask(obs: np.ndarray) -> Any:
        return env_action(np.asarray(advisor(np.asarray(obs)[None]))[0])

    return lambda _seed: [ask] * steps


def random_arm(space: gym.Space, count: int) -> Arm:
    """``count`` uniformly random actions, drawn with the pair's seed (the same in every call)."""

    def draw(seed: int) -> list[Any]:
        space.seed(seed)
        return [env_action(space.sample()) for _ in range(count)]

    return draw


def advice_gains(
    env: gym.Env, agent: BaseAlgorithm, snapshot: Snapshot, state: CriticalState, samples: int, horizon: int, seed: int
) -> np.ndarray:
    """Return after the suggestion minus return after the agent's own action, per pair."""
    return paired_gains(env, agent, snapshot, fixed_arm(state.suggested_action), fixed_arm(state.agent_action),
                        samples, horizon, seed)


def significant(gains: np.ndarray, z: float) -> bool:
    """One-sided: the mean gain is positive and exceeds ``z`` standard errors."""
    mean = float(gains.mean())
    return mean > 0 and mean > z * _stderr(gains)


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("inf")


def _state_seed(seed: int, episode: int, step: int) -> int:
    """The pairs' seed of a state: the same state gets the same draws whichever advisor chose it."""
    return int(np.random.SeedSequence([seed, episode, step]).generate_state(1)[0])


def _drop(env: gym.Env, agent: BaseAlgorithm, trajectory: Trajectory, step: int, settings: FidelitySettings,
          seed: int) -> float:
    """Own action then policy, minus K random actions then policy: mean over the pairs."""
    assert trajectory.snapshots is not None
    gains = paired_gains(env, agent, trajectory.snapshots[step], fixed_arm(trajectory.actions[step]),
                         random_arm(env.action_space, settings.perturb_steps), settings.samples,
                         settings.horizon, _state_seed(seed, trajectory.episode, step))
    return float(gains.mean())


def measure_state(
    env: gym.Env, agent: BaseAlgorithm, trajectory: Trajectory, state: CriticalState, settings: FidelitySettings,
    seed: int, suggests: bool, advisor: Advisor | None = None,
) -> StateFidelity:
    """Criticality at ``state`` and at a control step of its episode; the advice's gain if it
    suggests (followed for ``follow_steps``: a live ``advisor`` is asked at each state, else the
    suggestion is held)."""
    assert trajectory.snapshots is not None
    control = int(np.random.default_rng([seed, state.episode, state.step]).integers(trajectory.length))
    record = StateFidelity(state.episode, state.step, _drop(env, agent, trajectory, state.step, settings, seed),
                           control, _drop(env, agent, trajectory, control, settings, seed))
    snapshot, advice_seed = trajectory.snapshots[state.step], _state_seed(seed, state.episode, state.step) + 7_919
    follow = settings.follow_steps
    own = fixed_arm(state.agent_action)
    random_gains = paired_gains(env, agent, snapshot, random_arm(env.action_space, follow), own, settings.samples,
                                settings.horizon, advice_seed)
    record.random_gain = float(random_gains.mean())
    if suggests:
        advice = (fixed_arm(*[state.suggested_action] * follow) if advisor is None or follow == 1
                  else advisor_arm(advisor, follow))
        gains = paired_gains(env, agent, snapshot, advice, own, settings.samples, settings.horizon, advice_seed)
        record.advice_gain, record.advice_stderr = float(gains.mean()), _stderr(gains)
        record.helps = significant(gains, settings.z)
    return record


def measure_fidelity(
    states: list[CriticalState], trajectories: list[Trajectory], agent: BaseAlgorithm, env_id: str,
    settings: FidelitySettings, seed: int, suggests: bool,
    on_state: Callable[[int, StateFidelity], None] | None = None, advisor: Advisor | None = None,
) -> list[StateFidelity]:
    """Every state whose episode kept snapshots, measured; in the order of ``states``."""
    by_episode = {t.episode: t for t in trajectories}
    records: list[StateFidelity] = []
    env = make_env(env_id)
    try:
        for state in states:
            trajectory = by_episode.get(state.episode)
            if trajectory is None or trajectory.snapshots is None:
                continue
            records.append(measure_state(env, agent, trajectory, state, settings, seed, suggests, advisor))
            if on_state is not None:
                on_state(len(records), records[-1])
    finally:
        env.close()
    return records


def mean_ci(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Mean with a 95% percentile-bootstrap CI over the values."""
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(len(values), size=(BOOTSTRAP_REPS, len(values)))].mean(axis=1)
    return {"point": float(values.mean()), "low": float(np.quantile(boot, 0.025)),
            "high": float(np.quantile(boot, 0.975))}


def summarize(records: list[StateFidelity]) -> dict[str, Any]:
    """An advisor's row: criticality over its control, advice gain, share of suggestions that help."""
    summary: dict[str, Any] = {"states": len(records)}
    if not records:
        return summary
    drops = np.array([r.drop for r in records])
    controls = np.array([r.control_drop for r in records])
    summary.update(drop=float(drops.mean()), control_drop=float(controls.mean()),
                   criticality=mean_ci(drops - controls))
    summary["random_gain"] = mean_ci(np.array([r.random_gain for r in records]))
    advised = [r for r in records if r.advice_gain is not None]
    if advised:
        summary["advice_gain"] = mean_ci(np.array([r.advice_gain for r in advised]))
        summary["gain_over_random"] = mean_ci(np.array([r.advice_gain - r.random_gain for r in advised]))
        summary["helps_share"] = sum(bool(r.helps) for r in advised) / len(advised)
    return summary
