"""The public refinement API, in the shape of Stable-Baselines3::

    refiner = Refiner("agent.zip", "Hopper-v5", method="ultra-ra", guidance=table, seed=0)
    refiner.refine(total_timesteps=50_000, progress_bar=True)
    refiner.save("refined.zip")
    refined = Refiner.load("refined.zip", "Hopper-v5")
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, configure

from ultrarl.envs.factory import check_agent_spaces, make_vec_env
from ultrarl.envs.snapshot import Snapshot
from ultrarl.errors import UltraRLError
from ultrarl.guidance.table import GuidanceTable
from ultrarl.refine.callbacks import ExplorationLogger, TrueReturnLogger
from ultrarl.refine.checkpoint import Checkpoint, PeriodicCheckpoint
from ultrarl.refine.exploration import CriticalStateResets, RNDBonus
from ultrarl.refine.guided_ppo import GuidedPPO, Modulation
from ultrarl.run_dir import write_bytes_atomic

Method = Literal["ultra-a", "ultra-r", "ultra-ra", "ppo", "statemask-r", "rice", "random", "oracle"]
METHODS: tuple[str, ...] = get_args(Method)
ULTRA_METHODS = ("ultra-a", "ultra-r", "ultra-ra")  # advised by an LLM
GUIDED_METHODS = (*ULTRA_METHODS, "oracle")  # modulate rollouts with a guidance table
RESET_METHODS = ("statemask-r", "rice", "random")  # refine from resets to critical states


class ModulationConfig(BaseModel):
    """ULTRA's knobs (METHOD.md step 6); every default is a documented choice."""

    model_config = ConfigDict(extra="forbid")

    override_prob: float = Field(1.0, ge=0.0, le=1.0, description="probability of executing the suggested action")
    anneal_override: bool = Field(True, description="anneal the override probability linearly to 0")
    beta: float = Field(0.5, ge=0.0, description="implicit-reward weight, relative to mean |r| per step")


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise UltraRLError(f"unknown method '{method}'; choose one of: {', '.join(METHODS)}")
    return method  # type: ignore[return-value]


def load_agent(path: str | Path, cls: type[PPO] = PPO, **kwargs: object) -> PPO:
    """Load an SB3 PPO zip, turning every way it can be broken into one clear error."""
    path = Path(path)
    if not path.is_file():
        raise UltraRLError(f"agent file {path} does not exist")
    if path.stat().st_size == 0:
        raise UltraRLError(f"agent file {path} is empty")
    if not zipfile.is_zipfile(path):
        raise UltraRLError(f"agent file {path} is not an SB3 model zip")
    try:
        return cls.load(path, device="cpu", **kwargs)  # type: ignore[arg-type]
    except UltraRLError:
        raise
    except Exception as exc:  # SB3 raises many kinds for a wrong or damaged zip
        raise UltraRLError(f"cannot load agent {path} as an SB3 PPO model: {type(exc).__name__}: {exc}") from exc


class Refiner:
    """Refines a sub-optimal PPO agent with one of ULTRA's variants or a baseline: continued PPO,
    StateMask-R, RICE, random (resets to critical states, RND) or the oracle (an expert advisor)."""

    def __init__(
        self,
        agent: PPO | str | Path,
        env_id: str,
        method: str = "ultra-ra",
        guidance: GuidanceTable | None = None,
        modulation: ModulationConfig | None = None,
        seed: int = 0,
        n_envs: int = 1,
        log_dir: str | Path | None = None,
        initial_states: list[Snapshot] | None = None,
        reset_prob: float = 0.0,
        rnd_weight: float = 0.0,
    ) -> None:
        self.method = check_method(method)
        self.env_id = env_id
        self.seed = seed
        if self.method in GUIDED_METHODS and guidance is None:
            raise UltraRLError(f"method {self.method} needs a guidance table (run explain first)")
        if reset_prob > 0 and not initial_states:
            raise UltraRLError(f"method {self.method} resets to critical states but none were given")
        self.guidance = guidance
        self.modulation_config = modulation or ModulationConfig()
        # RICE's machinery: a mixed initial distribution (critical states with probability p)
        # and an RND bonus on the training reward; Monitor, inside both, sees the true reward.
        resets = reset_prob > 0 and bool(initial_states)
        self.env = make_vec_env(
            env_id, n_envs=n_envs, seed=seed,
            wrapper_class=CriticalStateResets if resets else None,
            wrapper_kwargs={"snapshots": initial_states, "reset_prob": reset_prob, "seed": seed} if resets else None,
        )
        if rnd_weight > 0:
            self.env = RNDBonus(self.env, rnd_weight, seed=seed)
        # Continue from the agent's weights, hyperparameters and optimiser state: loading the
        # zip as the refinement class keeps all three (an in-memory agent goes through a buffer).
        cls = GuidedPPO if self.method in GUIDED_METHODS else PPO
        if isinstance(agent, PPO):
            check_agent_spaces(agent.observation_space, agent.action_space, env_id)
            buffer = io.BytesIO()
            agent.save(buffer)
            buffer.seek(0)
            self.model: PPO = cls.load(buffer, env=self.env, device="cpu")
        else:
            probe = load_agent(agent)
            check_agent_spaces(probe.observation_space, probe.action_space, env_id)
            self.model = load_agent(agent, cls, env=self.env)
        self.model.set_random_seed(seed)
        if isinstance(self.model, GuidedPPO):
            self.model.set_modulation(self._modulation(), seed=seed)
        self.true_returns = TrueReturnLogger()
        self.resumed_from = 0  # steps already done by the checkpoint this refiner continues
        # Without a log directory, log nowhere (SB3's default would create a folder in /tmp).
        self.model.set_logger(configure(str(log_dir), ["csv", "tensorboard"]) if log_dir else Logger(None, []))

    def _modulation(self) -> Modulation:
        assert self.guidance is not None
        cfg = self.modulation_config
        return Modulation(
            table=self.guidance,
            override_actions=self.method in ("ultra-a", "ultra-ra", "oracle"),
            shape_rewards=self.method in ("ultra-r", "ultra-ra", "oracle"),
            override_prob=cfg.override_prob,
            anneal_override=cfg.anneal_override,
            beta=cfg.beta,
        )

    def refine(
        self,
        total_timesteps: int,
        progress_bar: bool = False,
        callback: BaseCallback | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 0,
    ) -> "Refiner":
        """Train until ``total_timesteps`` refinement steps are done (counting resumed ones);
        with ``checkpoint_dir``, write a checkpoint every ``checkpoint_every`` steps."""
        if total_timesteps <= 0:
            raise UltraRLError(f"total_timesteps must be positive, got {total_timesteps}")
        remaining = total_timesteps - self.resumed_from
        if remaining <= 0:
            return self
        callbacks: list[BaseCallback] = [self.true_returns, ExplorationLogger()] + ([callback] if callback else [])
        if checkpoint_dir is not None and checkpoint_every > 0:
            callbacks.append(PeriodicCheckpoint(Path(checkpoint_dir), checkpoint_every, self.checkpoint_state))
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
        state: dict[str, Any] = {"episodes": self.true_returns.episodes, "method": self.method}
        if isinstance(self.model, GuidedPPO) and self.model.modulation is not None:
            state["modulation_total"] = dict(self.model.modulation_stats.total)
            state["override_rng"] = self.model._override_rng.bit_generator.state
        if isinstance(self.env, RNDBonus):
            state["rnd"] = self.env.state()
        return state

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, env_id: str, method: str = "ultra-ra", **options: Any) -> "Refiner":
        """Continue a refinement from its latest checkpoint (``ultrarl refine --resume``);
        ``options`` are the constructor's (guidance, modulation, seed, resets, ...)."""
        if checkpoint.state.get("method", method) != method:
            raise UltraRLError(f"the checkpoint is of method {checkpoint.state['method']}, not {method}")
        refiner = cls(checkpoint.model_path, env_id, method, **options)
        refiner.resumed_from = checkpoint.timesteps
        refiner.model.num_timesteps = checkpoint.timesteps
        refiner.true_returns.episodes = [tuple(e) for e in checkpoint.state.get("episodes", [])]  # type: ignore[misc]
        if isinstance(refiner.model, GuidedPPO) and "modulation_total" in checkpoint.state:
            refiner.model.modulation_stats.total = dict(checkpoint.state["modulation_total"])
            refiner.model._override_rng.bit_generator.state = checkpoint.state["override_rng"]
        if isinstance(refiner.env, RNDBonus) and "rnd" in checkpoint.state:
            refiner.env.load_state(checkpoint.state["rnd"])
        return refiner

    @property
    def modulation_totals(self) -> dict[str, float]:
        """Whole-run match and override counts (zeros for plain PPO)."""
        if not isinstance(self.model, GuidedPPO) or self.model.modulation is None:
            return {"steps": 0, "matched": 0, "overridden": 0, "match_rate": 0.0, "override_rate": 0.0}
        total = dict(self.model.modulation_stats.total)
        steps = max(total["steps"], 1)
        return {**total, "match_rate": total["matched"] / steps, "override_rate": total["overridden"] / steps}

    def save(self, path: str | Path) -> None:
        """The refined policy as a plain SB3 PPO zip: loadable with ``PPO.load`` anywhere.
        Written atomically: a crash never leaves a half-written zip under ``path``."""
        buffer = io.BytesIO()
        self.model.save(buffer)
        write_bytes_atomic(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, env_id: str, seed: int = 0) -> "Refiner":
        """A refiner around a saved model, to evaluate it or to continue with plain PPO."""
        return cls(path, env_id, method="ppo", seed=seed)
