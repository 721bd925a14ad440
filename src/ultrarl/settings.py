"""Every setting, once: typed, validated, documented, saved as config.yaml in every run.

The command line is built from these models (``ultrarl.cli``): a field's description is its
``--help`` line, its default is printed next to it, and a flag cannot exist without its setting.
Each stage owns its knobs (``LLMSettings``, ``GuidanceSettings``, ``VerifySettings``,
``ModulationSettings``); the run settings nest them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ultrarl.envs.factory import import_gym_packages
from ultrarl.envs.snapshot import supports_snapshots
from ultrarl.errors import UltraRLError, checked_value
from ultrarl.explain.fidelity import FidelitySettings
from ultrarl.guidance.table import GuidanceSettings
from ultrarl.guidance.verify import VerifySettings
from ultrarl.llm.settings import LLMSettings
from ultrarl.methods import Method, get_method
from ultrarl.refine.modulation import ModulationSettings

POSITIONAL = {"positional": True}
CONFIG_ONLY = {"cli": False}


class EnvSettings(BaseModel):
    """Which environment, and how to find it."""

    model_config = ConfigDict(extra="forbid")

    env_id: str = Field(description="Gymnasium id, e.g. Hopper-v5, or module:EnvId for an environment your "
                                    "module registers", json_schema_extra=POSITIONAL)
    seed: int = Field(0, description="seed of rollouts, refinement and evaluation")
    gym_packages: str | None = Field(None, description="modules to import first, comma-separated: they register "
                                                       "your environments (as RL Zoo's --gym-packages)")

    @field_validator("gym_packages")
    @classmethod
    def _import_gym_packages(cls, value: str | None) -> str | None:
        # Imported wherever settings are built (CLI, resume, bench workers): the ids then resolve.
        if value:
            checked_value(lambda v: import_gym_packages([p.strip() for p in v.split(",") if p.strip()]), value)
        return value


class AgentSettings(EnvSettings):
    agent: str = Field(description="the agent: an SB3 PPO, SAC, TD3 or DQN zip, or an RL Zoo run folder (its vecnormalize.pkl "
                                   "is applied; so is one beside a zip)", json_schema_extra={"required_flag": True})
    eval_episodes: int = Field(10, gt=0, description="evaluation episodes, deterministic, no guidance")


class ExplainSettings(AgentSettings):
    """Everything that determines the identification stage (``ultrarl explain``)."""

    episodes: int = Field(16, gt=0, description="episodes rolled out and explained")
    deterministic_rollouts: bool = Field(False, description="explain the agent's deterministic episodes")
    critical_steps: int = Field(3, gt=0, description="k, critical steps per episode")
    token_budget: int = Field(3000, ge=256, description="prompt tokens per episode (tokens)")
    feature_names: list[str] | None = Field(
        None, description="names of the observation values (generic describer)", json_schema_extra=CONFIG_ONLY
    )
    action_names: list[str] | None = Field(
        None, description="names of the actions or actuators (generic describer)", json_schema_extra=CONFIG_ONLY
    )
    env_context: str | None = Field(None, description="file with the environment's goal, reward and termination")
    save_frames: bool = Field(False, description="save a picture of each critical state (offscreen rendering)")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    guidance: GuidanceSettings = Field(default_factory=GuidanceSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)

    @property
    def needs_snapshots(self) -> bool:
        """The explained episodes keep a snapshot per step (for --verify)."""
        return self.verify.enabled


class IdentifySettings(ExplainSettings):
    """Identification by any method: the knobs of the mask network and of the expert."""

    mask_alpha: float = Field(0.01, ge=0, description="α, the mask network's bonus per blinded step")
    mask_timesteps: int = Field(20_000, gt=0, description="training budget of the mask network (environment steps of PPO)")
    expert: str | None = Field(None, description="the advisor of --method oracle and oracle-offline: an SB3 PPO, SAC, "
                                                 "TD3 or DQN zip, or an RL Zoo run folder")
    advice_noise: float = Field(0.0, ge=0, le=1, description="probability that each advice is replaced by uniformly "
                                                             "random advice (to measure how good advice must be)")


class RefineSettings(IdentifySettings):
    """Everything that determines a refinement run (``ultrarl refine``)."""

    method: str = Field("ultra-ra", description="ultra-a, ultra-r, ultra-ra; baselines ppo (continued training of "
                                                "the agent's own algorithm: PPO, SAC, TD3 or DQN), statemask-r, rice, "
                                                "random, oracle (an upper bound)")
    timesteps: int = Field(50_000, gt=0, description="refinement budget (environment steps)")
    checkpoint_every: int = Field(10_000, ge=0, description="steps between checkpoints (0: none)")
    eval_every: int = Field(0, ge=0, description="steps between evaluations during refinement, on the final "
                                                 "evaluation's episodes, after the update that passes each "
                                                 "multiple, and at the end (evaluations.csv; 0: none)")
    reset_prob: float | None = Field(
        None, ge=0, le=1, description="p, probability that an episode starts at a critical state "
                                      "(unset: the method's default)"
    )
    rnd_weight: float | None = Field(None, ge=0, description="λ, weight of the normalised RND bonus "
                                                             "(unset: the method's default)")
    rounds: int = Field(1, gt=0, description="identify-then-refine rounds of a guided method "
                                              "(ours; the budget is split evenly)")
    freeze_normalization: bool = Field(
        False, description="keep a normalised agent's observation statistics (RL Zoo's vecnormalize.pkl) as loaded "
                           "during refinement (off: they go on updating, as in RL Zoo's continued training)")
    modulation: ModulationSettings = Field(default_factory=ModulationSettings)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return checked_value(get_method, value)

    @property
    def method_spec(self) -> Method:
        return get_method(self.method)

    @property
    def effective_reset_prob(self) -> float:
        """The probability set, else the method's default. Where advice also runs from matched
        states, an environment without snapshots starts every episode at its own start instead;
        a method whose critical states carry no advice (RICE's kind) needs them."""
        if self.reset_prob is not None:
            return self.reset_prob
        default = self.method_spec.reset_prob
        return default if default == 0 or not self.method_spec.suggests or supports_snapshots(self.env_id) else 0.0

    @property
    def effective_rnd_weight(self) -> float:
        return self.rnd_weight if self.rnd_weight is not None else self.method_spec.rnd_weight

    @property
    def effective_modulation(self) -> ModulationSettings:
        """The modulation settings with the method's defaults filled in."""
        return self.modulation.for_method(self.method_spec)

    @property
    def needs_snapshots(self) -> bool:
        return self.effective_reset_prob > 0 or (self.verify.enabled and self.method_spec.asks_llm) \
            or (self.method_spec.plays_expert_plans and supports_snapshots(self.env_id))


class FidelityRunSettings(IdentifySettings):
    """``ultrarl fidelity``: how critical each advisor's states are and how good its suggestions."""

    advisors: str = Field("ultra-ra,random", description="methods whose critical states are measured, "
                                                         "comma-separated (e.g. ultra-ra,random,rice,oracle)")
    fidelity: FidelitySettings = Field(default_factory=FidelitySettings)

    @field_validator("advisors")
    @classmethod
    def _known_advisors(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names:
            raise ValueError("--advisors names no method")
        for name in names:
            checked_value(get_method, name)
            if get_method(name).identify == "none":
                raise ValueError(f"method '{name}' identifies no critical state; choose one that does")
        return ",".join(names)

    @property
    def advisor_methods(self) -> list[Method]:
        return [get_method(name) for name in self.advisors.split(",")]

    @property
    def needs_snapshots(self) -> bool:
        return True


class PretrainSettings(EnvSettings):
    """``ultrarl pretrain``: a PPO agent with SB3's default hyperparameters."""

    timesteps: int = Field(gt=0, description="training budget (environment steps; with --until-plateau, the cap)",
                           json_schema_extra={"required_flag": True})
    out: str = Field(description="where the agent zip is written", json_schema_extra={"required_flag": True})
    until_plateau: bool = Field(False, description="stop once the evaluated return has not improved by more than "
                                                   "--plateau-margin for --plateau-window evaluations")
    keep_best: bool = Field(False, description="write the checkpoint with the best evaluated return, not the last "
                                               "(PPO's return swings between updates; RL Zoo keeps its best model too)")
    plateau_eval_every: int = Field(10_000, gt=0, description="steps between evaluations (environment steps; "
                                                              "--until-plateau, --keep-best)")
    plateau_eval_episodes: int = Field(10, gt=0, description="episodes per evaluation, deterministic")
    plateau_window: int = Field(5, gt=0, description="evaluations without improvement that make a plateau")
    plateau_margin: float = Field(0.02, ge=0, description="an improvement beats the return of the last improvement "
                                                          "by more than this fraction of max(|that return|, 1)")
    plateau_smooth: int = Field(1, gt=0, description="the plateau rule judges the mean of this many latest "
                                                     "evaluations (1: each alone)")

    @field_validator("out")
    @classmethod
    def _zip(cls, value: str) -> str:
        if not value.endswith(".zip"):
            raise ValueError(f"--out must name a .zip file, got {value}")
        return value

    @model_validator(mode="after")
    def _evaluates(self) -> PretrainSettings:
        if (self.until_plateau or self.keep_best) and self.timesteps < self.plateau_eval_every:
            raise ValueError(f"--timesteps ({self.timesteps}) is below --plateau-eval-every ({self.plateau_eval_every}): "
                             "no evaluation would run")
        return self


class PlateauSettings(AgentSettings):
    """``ultrarl plateau``: does continued training still improve the agent?"""

    timesteps: int = Field(50_000, gt=0, description="continued-training budget per seed (environment steps): "
                                                     "the refinement budget you plan")
    seeds: str = Field("100,101,102", description="training seeds, comma-separated (keep them apart from the "
                                                  "seeds you will compare methods on)")
    expert: str | None = Field(None, description="a strong policy (zip or RL Zoo folder): the gap to it judges 'stuck'")
    stuck_fraction: float = Field(0.1, gt=0, le=1, description="stuck: the gain's upper 95% bound is below this "
                                                               "fraction of the gap to the expert")

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, value: str) -> str:
        try:
            seeds = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"--seeds must be integers, comma-separated, got {value}") from None
        if len(seeds) < 2:
            raise ValueError("--seeds needs at least 2 seeds for a confidence interval")
        return value

    @property
    def seed_list(self) -> list[int]:
        return [int(part) for part in self.seeds.split(",") if part.strip()]


class EvaluateSettings(AgentSettings):
    """``ultrarl evaluate``: the agent alone, deterministic; prints one JSON object."""

    eval_episodes: int = Field(10, gt=0, description="evaluation episodes, deterministic",
                               json_schema_extra={"flag": "episodes"})


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def settings_to_yaml(settings: BaseModel) -> str:
    return yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)


def read_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping, or a one-line error naming ``what`` it is."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UltraRLError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UltraRLError(f"{what} {path} must be a YAML mapping")
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` on top of ``base``, nested mappings merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_settings(cls: type[SettingsT], values: dict[str, Any]) -> SettingsT:
    """Validated settings, or a one-line error naming the first bad setting."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        raise UltraRLError(f"invalid setting {where}: {message}") from exc
