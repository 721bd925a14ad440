"""An agent on disk: a bare SB3 zip, or an RL Zoo run folder whose observations were normalised.

RL Zoo writes ``<run>/<EnvId>.zip`` (and ``best_model.zip`` with evaluation), and, beside them,
``<run>/<EnvId>/config.yml`` (the hyperparameters, ``normalize`` among them) and
``<run>/<EnvId>/vecnormalize.pkl`` (VecNormalize's running statistics). A policy trained on
normalised observations acts on raw ones only through those statistics: without them its
returns, and any refinement of it, are silently wrong. So:
- a folder, or a zip with ``vecnormalize.pkl`` beside it (or in ``<EnvId>/`` beside it), loads
  as a ``NormalizedAgent``: the model, acting on the environment's raw observations;
- a folder whose ``config.yml`` says ``normalize`` but that has no statistics is an error.
Everything ultrarl does with an agent (rollouts, prompts, matching, snapshots) works on raw
observations; only the policy sees normalised ones.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ultrarl.errors import UltraRLError

VECNORMALIZE = "vecnormalize.pkl"  # RL Zoo's name, kept for the refined model too
ZOO_CONFIG = "config.yml"


@dataclass(frozen=True)
class AgentFiles:
    model: Path
    vecnormalize: Path | None


class NormalizedAgent:
    """An SB3 model trained on VecNormalize'd observations, acting on raw ones.

    :param model: the SB3 model
    :param normalization: its VecNormalize statistics (only ``normalize_obs`` is used)
    Every attribute but ``predict`` is the model's.
    """

    def __init__(self, model: Any, normalization: VecNormalize) -> None:
        self.model = model
        self.normalization = normalization

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        return self.model.predict(self.normalization.normalize_obs(observation), state, episode_start, deterministic)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _zoo_config(path: Path) -> dict[str, Any]:
    """RL Zoo's config.yml is a dump of an OrderedDict; read it without executing Python tags."""

    class ZooLoader(yaml.SafeLoader):
        pass

    def ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        pairs = loader.construct_sequence(node.value[0], deep=True) if node.value else []  # type: ignore[index]
        return {str(k): v for k, v in pairs}

    ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    try:
        loaded = yaml.load(path.read_text(), Loader=ZooLoader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise UltraRLError(f"cannot read RL Zoo config {path}: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def locate_agent(path: str | Path, env_id: str) -> AgentFiles:
    """The model zip and normalisation statistics that ``--agent PATH`` names."""
    path = Path(path)
    name = env_id.rpartition(":")[2].replace("/", "-")  # RL Zoo's file name for ids with a namespace
    if path.is_dir():
        candidates = [path / f"{name}.zip", path / "best_model.zip", *sorted(path.glob("*.zip"))]
        model = next((p for p in candidates if p.is_file()), None)
        if model is None:
            raise UltraRLError(f"agent folder {path} holds no model zip (expected {name}.zip or best_model.zip)")
        folder = path
    else:
        model, folder = path, path.parent
    stats = next((p for p in (folder / VECNORMALIZE, folder / name / VECNORMALIZE) if p.is_file()), None)
    config = folder / name / ZOO_CONFIG
    if stats is None and config.is_file() and _zoo_config(config).get("normalize") not in (None, False, "False"):
        raise UltraRLError(f"{config} says the agent was trained with normalize, but there is no {VECNORMALIZE} "
                           f"beside {model.name} or in {folder / name}: its observations cannot be normalised")
    return AgentFiles(model, stats)


def load_normalization(path: Path) -> VecNormalize:
    """VecNormalize statistics, without an environment (``attach_normalization`` gives them one)."""
    try:
        with open(path, "rb") as f:
            normalization = pickle.load(f)  # SB3's VecNormalize.save format; the user's own file
    except Exception as exc:  # noqa: BLE001 - any damage is one line
        raise UltraRLError(f"cannot read normalisation statistics {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(normalization, VecNormalize):
        raise UltraRLError(f"{path} is not a VecNormalize file (it holds a {type(normalization).__name__})")
    return normalization


def attach_normalization(statistics: VecNormalize, venv: VecEnv, training: bool) -> VecNormalize:
    """A VecNormalize around ``venv`` with a copy of ``statistics`` (settings and running
    averages); ``training``: the averages go on updating."""
    normalization = VecNormalize(venv, training=training, norm_obs=statistics.norm_obs,
                                 norm_reward=statistics.norm_reward, clip_obs=statistics.clip_obs,
                                 clip_reward=statistics.clip_reward, gamma=statistics.gamma,
                                 epsilon=statistics.epsilon, norm_obs_keys=statistics.norm_obs_keys)
    normalization.obs_rms = copy.deepcopy(statistics.obs_rms)
    normalization.ret_rms = copy.deepcopy(statistics.ret_rms)
    return normalization


def policy_observations(normalization: VecNormalize | None, raw: np.ndarray) -> np.ndarray:
    """Raw observations as the policy sees them."""
    return normalization.normalize_obs(raw) if normalization is not None else raw


def in_training_units(normalization: VecNormalize | None, reward_term: np.ndarray) -> np.ndarray:
    """A term in raw reward units, as VecNormalize scales the reward PPO trains on (divided by
    the running std of the return; an off-policy buffer stores raw rewards instead)."""
    if normalization is None or not normalization.norm_reward:
        return reward_term
    return (reward_term / np.sqrt(normalization.ret_rms.var + normalization.epsilon)).astype(np.float32)
