"""Run settings: typed, validated, saved as config.yaml in every run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ultrarl.errors import UltraRLError
from ultrarl.refine.refiner import ModulationConfig


class ExplainSettings(BaseModel):
    """Everything that determines an explain run. The API key is never a setting: only the name
    of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    env_id: str
    agent: str
    seed: int = 0
    episodes: int = Field(16, gt=0, description="episodes rolled out and explained")
    deterministic_rollouts: bool = False
    llm: str = "local"
    llm_base_url: str | None = None
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_max_tokens: int = Field(400, gt=0, description="completion tokens per answer")
    llm_concurrency: int = Field(4, gt=0, description="parallel requests to a server (the local model runs one)")
    llm_max_retries: int = Field(3, ge=0, description="retries of timeouts, 429 and 5xx, with backoff and jitter")
    llm_timeout_s: float = Field(120.0, gt=0)
    llm_max_reasks: int = Field(1, ge=0, description="re-asks quoting the validation error")
    llm_max_calls: int | None = Field(None, gt=0, description="budget cap: LLM calls per run")
    llm_max_total_tokens: int | None = Field(None, gt=0, description="budget cap: tokens per run")
    cache_dir: str | None = None
    use_cache: bool = True
    critical_steps: int = Field(3, gt=0, description="k, critical steps per episode")
    token_budget: int = Field(3000, ge=256, description="prompt tokens per episode")
    epsilon: float | None = Field(None, gt=0, description="match radius; None calibrates it")
    epsilon_quantile: float = Field(0.9, gt=0, le=1, description="quantile of consecutive-state distances")
    eval_episodes: int = Field(10, gt=0)
    feature_names: list[str] | None = Field(None, description="names of the observation values (generic describer)")
    action_names: list[str] | None = Field(None, description="names of the actions or actuators (generic describer)")
    env_context: str | None = Field(None, description="file with the environment's goal, reward and termination")
    save_frames: bool = Field(False, description="save a picture of each critical state (offscreen rendering)")

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, value: str) -> str:
        from ultrarl.llm.factory import parse_llm_spec

        try:
            parse_llm_spec(value)
        except UltraRLError as exc:
            raise ValueError(str(exc)) from exc
        return value


class RefineSettings(ExplainSettings):
    method: str = "ultra-ra"
    timesteps: int = Field(50_000, gt=0)
    checkpoint_every: int = Field(10_000, ge=0, description="refinement steps between checkpoints (0: none)")
    modulation: ModulationConfig = Field(default_factory=ModulationConfig)
    # Resets and exploration (RICE's machinery). None: the method's default (see method_defaults).
    reset_prob: float | None = Field(None, ge=0, le=1, description="probability an episode starts at a critical state")
    rnd_weight: float | None = Field(None, ge=0, description="λ, weight of the normalised RND bonus")
    mask_alpha: float = Field(0.01, ge=0, description="α, the mask network's bonus per blinded step")
    mask_timesteps: int = Field(20_000, gt=0, description="PPO steps to train the mask network")
    expert: str | None = Field(None, description="expert SB3 PPO zip: the advisor of --method oracle")
    rounds: int = Field(1, gt=0, description="identify-then-refine rounds (ULTRA; the budget is split evenly)")
    verify: bool = Field(False, description="check each suggestion with short rollouts from its state")
    verify_samples: int = Field(4, gt=0, description="M, rollouts per arm when verifying")
    verify_horizon: int = Field(20, gt=0, description="H, steps per verification rollout")


# (reset probability, RND weight) per method, when the settings leave them at None. RICE's p is
# the probability of a critical start (the paper's meaning; its public code inverts it).
_METHOD_DEFAULTS: dict[str, tuple[float, float]] = {
    "statemask-r": (1.0, 0.0),
    "rice": (0.25, 0.01),
    "random": (0.25, 0.01),
}


def method_defaults(settings: RefineSettings) -> tuple[float, float]:
    reset_default, rnd_default = _METHOD_DEFAULTS.get(settings.method, (0.0, 0.0))
    reset_prob = settings.reset_prob if settings.reset_prob is not None else reset_default
    rnd_weight = settings.rnd_weight if settings.rnd_weight is not None else rnd_default
    return reset_prob, rnd_weight


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


def load_settings_file(path: Path, cls: type[BaseModel], overrides: dict[str, Any]) -> BaseModel:
    """A YAML config, with command-line values on top; unknown keys are an error."""
    return build_settings(cls, {**read_yaml_mapping(path), **overrides})


def build_settings(cls: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        raise UltraRLError(f"invalid setting {where}: {message}") from exc
