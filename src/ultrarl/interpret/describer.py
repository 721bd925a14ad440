"""State interpretation: one short English line per step, with named, unit-bearing quantities."""

from __future__ import annotations

from importlib import resources

import gymnasium as gym
import numpy as np

from ultrarl.errors import UltraRLError
from ultrarl.interpret.specs import EnvSpec, Quantity, spec_for


class StateDescriber:
    """Turns (observation, action, reward) into text for one environment.

    Environments without a hand-written spec get a generic describer: feature and action
    names from the caller (a config) or x0..xn / a0..an, and ``context`` (the prose about goal,
    reward and termination) from the caller or a generic one.
    """

    def __init__(
        self,
        env_id: str,
        observation_space: gym.Space,
        action_space: gym.Space,
        feature_names: list[str] | None = None,
        action_names: list[str] | None = None,
        context: str | None = None,
    ) -> None:
        self.env_id = env_id
        self.action_space = action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        obs_dim = int(np.prod(observation_space.shape))
        act_count = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))  # type: ignore[attr-defined]
        spec = spec_for(env_id)
        if feature_names or action_names or spec is None or spec.obs_dim != obs_dim or len(spec.action_names) != act_count:
            # Names from the user win over a hand-written spec; a spec that does not fit the
            # spaces (an env created with other options) falls back to the generic describer.
            spec = _generic_spec(obs_dim, act_count, feature_names, action_names)
        self.spec = spec
        self.context = context if context is not None else _load_context(spec.family)

    # -- single pieces -------------------------------------------------------------------------
    def quantities(self, obs: np.ndarray, previous_obs: np.ndarray | None = None) -> np.ndarray:
        """The spec's quantities for one observation (decoded where the spec has a decoder)."""
        if self.spec.decode is not None:
            return self.spec.decode(np.asarray(obs), previous_obs)
        return np.asarray(obs, dtype=np.float64).ravel()

    def describe_state(self, obs: np.ndarray, previous_obs: np.ndarray | None = None) -> str:
        values = self.quantities(obs, previous_obs)
        return ", ".join(_format_quantity(q, v) for q, v in zip(self.spec.observation, values) if q.shown)

    def describe_action(self, action: np.ndarray | int) -> str:
        if self.discrete:
            index = int(np.asarray(action).item())
            return f"{self.spec.action_names[index]} ({index})"
        values = np.asarray(action, dtype=np.float64).ravel()
        return ", ".join(f"{name} {v:+.2f}" for name, v in zip(self.spec.action_names, values))

    def describe_step(
        self,
        step: int,
        obs: np.ndarray,
        action: np.ndarray | int,
        reward: float,
        previous_obs: np.ndarray | None = None,
    ) -> str:
        state = self.describe_state(obs, previous_obs)
        return f"step {step}: {state}; action: {self.describe_action(action)}; reward {reward:+.2f}"

    # -- for the prompt ------------------------------------------------------------------------
    def action_instructions(self) -> str:
        """How the LLM must write a suggested action for this action space."""
        if self.discrete:
            choices = ", ".join(f"{i} = {name}" for i, name in enumerate(self.spec.action_names))
            return f"suggested_action is one action index: {choices}."
        low = np.asarray(self.action_space.low).ravel()  # type: ignore[attr-defined]
        high = np.asarray(self.action_space.high).ravel()  # type: ignore[attr-defined]
        parts = ", ".join(
            f"{name} in [{lo:g}, {hi:g}]" for name, lo, hi in zip(self.spec.action_names, low, high)
        )
        return f"suggested_action is a list of {len(low)} numbers, in this order: {parts}."

    def quantity_legend(self) -> str:
        shown = [q for q in self.spec.observation if q.shown]
        legend = "; ".join(f"{q.name} ({q.unit})" if q.unit else q.name for q in shown)
        hidden = len(self.spec.observation) - len(shown)
        return legend + (f"; {hidden} further values not shown" if hidden else "")


def _format_quantity(q: Quantity, value: float) -> str:
    # No "+" on positive values: a sign is a token per quantity and the minus says enough.
    value = round(float(value), q.decimals) + 0.0  # + 0.0 turns -0.0 into 0.0: no "-0.00"
    return f"{q.name} {value:.{q.decimals}f} {q.unit}".rstrip()


def _generic_spec(
    obs_dim: int, act_count: int, feature_names: list[str] | None, action_names: list[str] | None
) -> EnvSpec:
    features = feature_names or [f"x{i}" for i in range(obs_dim)]
    actions = action_names or [f"a{i}" for i in range(act_count)]
    if len(features) != obs_dim:
        raise UltraRLError(f"{len(features)} feature names given for an observation of {obs_dim} values")
    if len(actions) != act_count:
        raise UltraRLError(f"{len(actions)} action names given for an action space of {act_count}")
    return EnvSpec(
        family="generic",
        observation=tuple(Quantity(name, "") for name in features),
        action_names=tuple(actions),
    )


def _load_context(family: str) -> str:
    return resources.files("ultrarl.interpret").joinpath("contexts", f"{family}.md").read_text().strip()
