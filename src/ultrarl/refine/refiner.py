"""The public refinement API, in the shape of Stable-Baselines3::

    refiner = Refiner("agent.zip", "Hopper-v5", method="ultra-ra", guidance=table, seed=0)
    refiner.refine(total_timesteps=50_000, progress_bar=True)
    refiner.save("refined.zip")
    refined = Refiner.load("refined.zip", "Hopper-v5")
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3 import DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.vec_env import VecNormalize

from ultrarl.envs.actions import equivalent_actions
from ultrarl.envs.factory import check_agent_spaces, make_vec_env
from ultrarl.envs.snapshot import Snapshot, supports_snapshots
from ultrarl.errors import UltraRLError
from ultrarl.guidance.table import GuidanceTable
from ultrarl.methods import get_method
from ultrarl.refine.agent_files import (
    VECNORMALIZE,
    NormalizedAgent,
    attach_normalization,
    load_normalization,
    locate_agent,
)
from ultrarl.refine.callbacks import ExplorationLogger, PeriodicEvaluation, TrueReturnLogger
from ultrarl.refine.checkpoint import Checkpoint, PeriodicCheckpoint
from ultrarl.refine.exploration import CriticalStateResets, RNDBonus
from ultrarl.refine.guided_off_policy import GuidedDQN, GuidedSAC, GuidedTD3
from ultrarl.refine.guided_ppo import GuidedPPO
from ultrarl.refine.modulation import Advisor, Modulation, ModulationSettings
from ultrarl.refine.training_state import RestoreTrainingState, capture_training_state
from ultrarl.run_dir import write_bytes_atomic, write_model


# The algorithms ultrarl refines, and the class that refines each. Off-policy agents always
# refine through their guided class, continued training included: it changes how the algorithm
# starts (no uniform warm-up), the same for every method. PPO refines plainly without guidance.
ALGORITHMS: dict[str, tuple[type[BaseAlgorithm], type[BaseAlgorithm]]] = {
    "PPO": (PPO, GuidedPPO), "SAC": (SAC, GuidedSAC), "TD3": (TD3, GuidedTD3), "DQN": (DQN, GuidedDQN),
}


def _algorithm(path: Path) -> str:
    """Which algorithm saved ``path``, from the policy class SB3 records in the zip's data."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UltraRLError(f"cannot load agent {path}: not an SB3 model zip ({type(exc).__name__}: {exc})") from exc
    module = str(data.get("policy_class", {}).get("__module__", ""))
    family = module.split(".")[1] if module.startswith("stable_baselines3.") else module or "unknown"
    if family == "common":  # ActorCriticPolicy: PPO (or A2C, which has no clip range)
        family = "ppo" if "clip_range" in data else "a2c"
    if family.upper() not in ALGORITHMS:
        raise UltraRLError(f"agent {path} was trained with {family.upper()}; ultrarl refines PPO, SAC, TD3 and DQN agents")
    return family.upper()


def refinement_class(model: BaseAlgorithm, guided: bool) -> type[BaseAlgorithm]:
    """The class that refines ``model``: its guided class where there is guidance or the
    algorithm is off-policy, else plain PPO."""
    plain, guided_class = next(classes for classes in ALGORITHMS.values() if isinstance(model, classes[0]))
    return guided_class if guided or plain is not PPO else plain


def load_agent(path: str | Path, **kwargs: object) -> BaseAlgorithm:
    """Load an SB3 PPO, SAC, TD3 or DQN zip, turning every way it can be broken into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise UltraRLError(f"agent file {path} does not exist")
    if path.stat().st_size == 0:
        raise UltraRLError(f"agent file {path} is empty")
    if not zipfile.is_zipfile(path):
        raise UltraRLError(f"agent file {path} is not an SB3 model zip")
    cls = ALGORITHMS[_algorithm(path)][0]
    try:
        return cls.load(path, device="cpu", **kwargs)  # type: ignore[arg-type]
    except UltraRLError:
        raise
    except Exception as exc:  # SB3 raises many kinds for a wrong or damaged zip
        raise UltraRLError(f"cannot load agent {path} as an SB3 {cls.__name__} model: {type(exc).__name__}: {exc}") from exc


def load_checked_agent(path: str | Path, env_id: str) -> BaseAlgorithm | NormalizedAgent:
    """An agent (a zip, or an RL Zoo run folder), loaded once, whose spaces match the
    environment's; with normalisation statistics, it acts on raw observations through them."""
    found = locate_agent(path, env_id)
    agent = load_agent(found.model)
    check_agent_spaces(agent.observation_space, agent.action_space, env_id)
    if found.vecnormalize is None:
        return agent
    return NormalizedAgent(agent, load_normalization(found.vecnormalize))


class Refiner:
    """Refines a sub-optimal PPO, SAC, TD3 or DQN agent with one of ULTRA's variants or a baseline:
    continued training of its own algorithm (``ppo``),
    StateMask-R, RICE, random (resets to critical states, RND) or the oracle (an expert advisor).

    :param agent: the agent (an SB3 PPO, SAC, TD3 or DQN model, whose spaces were checked) or its path
    :param env_id: the environment
    :param method: a name in ``ultrarl.methods.METHODS``: it decides override and shaping
    :param guidance: the guidance table (guided methods)
    :param modulation: ULTRA's settings (override probability, β, supervised term, ...)
    :param advisor: a live advisor for matched states (the oracle's expert); None: the table
    :param seed: seed of the environments, PPO and the modulation's draws
    :param n_envs: parallel environments
    :param log_dir: SB3 CSV and TensorBoard logs (None: no logs)
    :param initial_states: the critical states episodes may start from
    :param reset_prob: probability that an episode starts at one of them (None: the method's default)
    :param rnd_weight: λ of the RND bonus on the training reward (0: none; None: the method's default)
    Every setting left unset takes the method's default from its registry entry
    (``ultrarl.methods``), as the CLI and the bench do.
    :param update_normalization: a normalised agent's statistics go on updating during refinement
        (False: frozen as loaded)
    """

    def __init__(
        self,
        agent: BaseAlgorithm | NormalizedAgent | str | Path,
        env_id: str,
        method: str = "ultra-ra",
        guidance: GuidanceTable | None = None,
        modulation: ModulationSettings | None = None,
        advisor: Advisor | None = None,
        seed: int = 0,
        n_envs: int = 1,
        log_dir: str | Path | None = None,
        initial_states: list[Snapshot] | None = None,
        reset_prob: float | None = None,
        rnd_weight: float | None = None,
        update_normalization: bool = True,
    ) -> None:
        self.method = get_method(method)
        reset_prob = self.method.reset_prob if reset_prob is None else reset_prob
        rnd_weight = self.method.rnd_weight if rnd_weight is None else rnd_weight
        modulation = (modulation or ModulationSettings()).for_method(self.method)
        self.env_id = env_id
        self.seed = seed
        if self.method.guided and guidance is None:
            raise UltraRLError(f"method {self.method.name} needs a guidance table (run explain first)")
        if reset_prob > 0 and not initial_states:
            raise UltraRLError(f"method {self.method.name} starts episodes at critical states (reset_prob "
                               f"{reset_prob}): give initial_states (their snapshots) or reset_prob=0")
        self.guidance = guidance
        self.reset_pool_size = len(initial_states or []) if reset_prob > 0 else 0
        if isinstance(agent, (str, Path)):
            agent = load_checked_agent(agent, env_id)
        self.env = self._make_env(n_envs, initial_states or [], reset_prob, rnd_weight)
        self.rnd = self.env if isinstance(self.env, RNDBonus) else None
        if isinstance(agent, NormalizedAgent):  # the policy trains on what it was trained on
            self.env = attach_normalization(agent.normalization, self.env, training=update_normalization)
        self.modulation = (
            Modulation(guidance, self.method.override_actions, self.method.shape_rewards, modulation, advisor, seed,
                       equivalent_actions(env_id))
            if self.method.guided and guidance is not None else None
        )
        self.model = self._continue(agent)
        self.model.set_random_seed(seed)
        self.true_returns = TrueReturnLogger()
        self.evaluations: list[tuple[int, float, float]] = []  # (timestep, mean, std) of refine(evaluate=...)
        self.resumed_from = 0  # steps already done by the checkpoint this refiner continues
        self.exact_resume: bool | None = None  # resumed with the checkpoint's training state (None: not resumed)
        self._restore: RestoreTrainingState | None = None
        # Without a log directory, log nowhere (SB3's default would create a folder in /tmp).
        self.model.set_logger(configure(str(log_dir), ["csv", "tensorboard"]) if log_dir else Logger(None, []))

    def _make_env(self, n_envs: int, initial_states: list[Snapshot], reset_prob: float, rnd_weight: float):  # type: ignore[no-untyped-def]
        """RICE's machinery: a mixed initial distribution (critical states with probability p,
        each environment with its own random stream) and an RND bonus on the training reward;
        Monitor, inside both, sees the true reward."""
        seed = self.seed

        def resets(env: gym.Env, rank: int) -> gym.Env:
            return CriticalStateResets(env, initial_states, reset_prob, seed=seed + rank)

        env = make_vec_env(self.env_id, n_envs=n_envs, seed=seed, wrapper=resets if reset_prob > 0 else None)
        return RNDBonus(env, rnd_weight, seed=seed) if rnd_weight > 0 else env

    def _continue(self, agent: BaseAlgorithm | NormalizedAgent) -> BaseAlgorithm:
        """The agent as the refinement class, with its weights, hyperparameters and optimiser
        state (saving and loading keeps all three)."""
        buffer = io.BytesIO()
        agent.save(buffer)
        buffer.seek(0)
        cls = refinement_class(agent.model if isinstance(agent, NormalizedAgent) else agent, self.modulation is not None)
        if cls is PPO:
            return cls.load(buffer, env=self.env, device="cpu")
        return cls.load(buffer, env=self.env, device="cpu", modulation=self.modulation)

    def refine(
        self,
        total_timesteps: int,
        progress_bar: bool = False,
        callback: BaseCallback | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
        evaluate: Callable[[BaseAlgorithm | NormalizedAgent], tuple[float, float]] | None = None,
        evaluate_every: int = 0,
    ) -> "Refiner":
        """Train until ``total_timesteps`` refinement steps are done (counting resumed ones);
        with ``checkpoint_dir``, write a checkpoint every ``checkpoint_every`` steps; with
        ``evaluate``, evaluate the policy every ``evaluate_every`` steps (``self.evaluations``)."""
        if total_timesteps <= 0:
            raise UltraRLError(f"total_timesteps must be positive, got {total_timesteps}")
        remaining = total_timesteps - self.resumed_from
        if remaining <= 0:
            return self
        callbacks: list[BaseCallback] = [self.true_returns, ExplorationLogger()] + ([callback] if callback else [])
        if self._restore is not None:  # first: the others start from the restored state
            callbacks.insert(0, self._restore)
            self._restore = None
        if evaluate is not None and evaluate_every > 0:  # before the checkpoint, which then holds it
            callbacks.append(PeriodicEvaluation(evaluate_every, lambda: evaluate(self.agent), self.evaluations))
        if checkpoint_dir is not None and checkpoint_every > 0:
            callbacks.append(PeriodicCheckpoint(Path(checkpoint_dir), checkpoint_every, self.checkpoint_state,
                                                self.training_state))
        self.model.learn(
            total_timesteps=remaining,
            callback=CallbackList(callbacks),
            progress_bar=progress_bar,
            # A resumed run keeps its step counter, so the learning-rate and override schedules
            # continue where they stopped (SB3 then adds the done steps to the total).
            reset_num_timesteps=self.resumed_from == 0,
        )
        return self

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the SB3 zip."""
        state: dict[str, Any] = {"episodes": self.true_returns.episodes, "evaluations": self.evaluations,
                                 "method": self.method.name}
        if self.modulation is not None:
            state["modulation"] = self.modulation.state()
        if self.rnd is not None:
            state["rnd"] = self.rnd.state()
        return state

    def training_state(self) -> dict[str, Any]:
        """Random states, environments mid-episode and the supervised term (``training_state.py``);
        the environments only where snapshots restore them exactly."""
        return capture_training_state(self.model, with_envs=supports_snapshots(self.env_id))

    def resume_from(self, checkpoint: Checkpoint) -> "Refiner":
        """Continue from a checkpoint of the same run (``ultrarl refine --resume``): weights,
        optimiser, step counter, learning curve and counters, and (where the checkpoint holds
        them) the random states and environments, so the run ends as the uninterrupted one."""
        if checkpoint.state.get("method", self.method.name) != self.method.name:
            raise UltraRLError(f"the checkpoint is of method {checkpoint.state['method']}, not {self.method.name}")
        logger = self.model.logger
        self.model = self._continue(load_agent(checkpoint.model_path))
        self.model.set_random_seed(self.seed)
        self.model.set_logger(logger)
        self.resumed_from = checkpoint.timesteps
        self.model.num_timesteps = checkpoint.timesteps
        self.true_returns.episodes = [tuple(e) for e in checkpoint.state.get("episodes", [])]  # type: ignore[misc]
        self.evaluations[:] = [tuple(e) for e in checkpoint.state.get("evaluations", [])]  # type: ignore[misc]
        if self.modulation is not None and "modulation" in checkpoint.state:
            self.modulation.load_state(checkpoint.state["modulation"])
        if self.rnd is not None and "rnd" in checkpoint.state:
            self.rnd.load_state(checkpoint.state["rnd"])
        training_state = checkpoint.training_state()
        self._restore = RestoreTrainingState(training_state) if training_state is not None else None
        self.exact_resume = (training_state is not None and training_state["envs"] is not None
                             and training_state.get("exact", True))
        return self

    @property
    def agent(self) -> BaseAlgorithm | NormalizedAgent:
        """The policy being refined, acting on raw observations (evaluation, rollouts)."""
        return NormalizedAgent(self.model, self.env) if isinstance(self.env, VecNormalize) else self.model

    @property
    def modulation_totals(self) -> dict[str, float]:
        """Whole-run match and override counts (zeros for unguided methods)."""
        if self.modulation is None:
            return {"steps": 0, "matched": 0, "overridden": 0, "match_rate": 0.0, "override_rate": 0.0}
        return {**self.modulation.stats.totals(), **self.modulation.trust_report()}

    def save(self, path: str | Path) -> None:
        """The refined policy as a plain SB3 zip (``PPO.load``, ``SAC.load``, ... anywhere), with
        its normalisation statistics beside it (``vecnormalize.pkl``, RL Zoo's file) where it has
        them. Written atomically: a crash never leaves a half-written file under ``path``."""
        write_model(Path(path), self.model)
        statistics = Path(path).parent / VECNORMALIZE
        if isinstance(self.env, VecNormalize):
            write_bytes_atomic(statistics, pickle.dumps(self.env))  # without its venv
        else:  # a previous run's statistics beside this model would be applied to it
            statistics.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, env_id: str, seed: int = 0) -> "Refiner":
        """A refiner around a saved model, to evaluate it or to continue with plain PPO."""
        return cls(path, env_id, method="ppo", seed=seed)
