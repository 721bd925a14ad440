from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the user's LLM cache.
os.environ.setdefault("ULTRARL_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "llm"))

# Under pytest-xdist (make test: two workers on two cores) each worker, and the processes its tests
# start with its environment, compute on one thread: two workers that each spin two OpenMP (torch)
# or ggml (llama.cpp) threads on two cores were slower together than one worker alone.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ULTRARL_LLM_THREADS"):
        os.environ.setdefault(variable, "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cartpole_agent_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (barely trained) SB3 PPO zip on disk, shared by the tests."""
    from ultrarl.pipeline import pretrain
    from ultrarl.settings import PretrainSettings

    path = tmp_path_factory.mktemp("agents") / "cartpole.zip"
    pretrain(PretrainSettings(env_id="CartPole-v1", timesteps=512, seed=0, out=str(path)), progress_bar=False)
    return path


@pytest.fixture(scope="session")
def pendulum_agent_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultrarl.pipeline import pretrain
    from ultrarl.settings import PretrainSettings

    path = tmp_path_factory.mktemp("agents") / "pendulum.zip"
    pretrain(PretrainSettings(env_id="Pendulum-v1", timesteps=256, seed=0, out=str(path)), progress_bar=False)
    return path
