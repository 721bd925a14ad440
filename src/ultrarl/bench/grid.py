"""``ultrarl bench CONFIG.yaml``: environments x methods x seeds on the same agents, budgets and
seeds, on a local process pool (default) or a Ray cluster.

Layout of a bench directory::

    bench.yaml                         the config, as run
    agents/<env>/seed<S>.zip           one sub-optimal agent per (environment, seed), shared
    experts/<env>.zip                  the oracle's expert per environment (when oracle is run)
    runs/<env>/<method>/seed<S>/       one run directory per (environment, method, seed)

The grid is resumable: a run whose directory holds ``config.yaml`` is finished and skipped; a
run that was killed part-way resumes from its checkpoint; a failed run writes ``error.txt``,
is reported, and does not stop the others. A run records the SHA-256 of the agent and expert it
started from (``inputs.json``) and is neither skipped nor resumed once they have changed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ultrarl import run_dir as files
from ultrarl.errors import UltraRLError, checked_value
from ultrarl.evaluate.evaluation import EvalResult
from ultrarl.experts import EXPERT_SEED  # the oracle's expert is trained once per environment, on its own seed
from ultrarl.methods import METHODS, get_method
from ultrarl.pipeline import pretrain, refine_agent
from ultrarl.refine.refiner import load_checked_agent
from ultrarl.report.bench_report import task_config
from ultrarl.settings import PretrainSettings, RefineSettings, build_settings, merge, read_yaml_mapping
from ultrarl.stages import evaluate, is_evaluation_for


class MethodSpec(BaseModel):
    """A method in the grid: a name for tables, an ``ultrarl refine --method`` and its settings."""

    model_config = ConfigDict(extra="forbid")

    name: str
    method: str
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        return checked_value(lambda name: get_method(name, refining=False), value)


class TaskSettings(BaseModel):
    """What one environment of the grid does differently from the bench's defaults (as the
    stuck-agent tasks need: 10 seeds of a fast task beside 5 of a MuJoCo one, each its budget)."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[int] | None = Field(None, min_length=1)
    pretrain_timesteps: int | None = Field(None, gt=0)
    refine_timesteps: int | None = Field(None, gt=0)
    eval_episodes: int | None = Field(None, gt=0)
    explain_episodes: int | None = Field(None, gt=0)
    settings: dict[str, Any] = Field(default_factory=dict, description="merged over the bench's settings")


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "bench"
    envs: list[str] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    pretrain_timesteps: int = Field(gt=0, description="budget of each sub-optimal agent")
    refine_timesteps: int = Field(gt=0, description="refinement budget, equal for every method")
    eval_episodes: int = Field(10, gt=0)
    explain_episodes: int = Field(8, gt=0, description="episodes explained per run (LLM, mask, oracle)")
    llm: str = "local"
    expert_timesteps: int = Field(200_000, gt=0, description="training budget of the oracle's expert")
    experts: dict[str, str] = Field(default_factory=dict, description="env -> expert zip, instead of training one")
    agents: dict[str, str] = Field(
        default_factory=dict,
        description="env -> a directory of shipped sub-optimal agents (seed<S>.zip), instead of training them",
    )
    expert_envs: dict[str, str] = Field(
        default_factory=dict,
        description="env -> the env its expert is trained on (same spaces; e.g. a sparse variant's dense twin)",
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="RefineSettings for every run")
    tasks: dict[str, TaskSettings] = Field(default_factory=dict, description="env -> its own seeds, budgets, settings")

    def for_env(self, env_id: str) -> BenchConfig:
        """The grid as it applies to ``env_id``: its task's entries replace the bench's own."""
        task = self.tasks.get(env_id)
        if task is None:
            return self
        update = {k: v for k, v in task_config(self.model_dump(), env_id).items() if k in TaskSettings.model_fields}
        return self.model_copy(update={**update, "settings": merge(self.settings, task.settings)})

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        # "rice" is shorthand for {name: rice, method: rice}.
        return [{"name": m, "method": m} if isinstance(m, str) else m for m in value or []]


def load_bench_config(path: Path) -> BenchConfig:
    config = build_settings(BenchConfig, read_yaml_mapping(path, "bench config"))
    assert isinstance(config, BenchConfig)
    names = [m.name for m in config.methods]
    if len(set(names)) != len(names):
        raise UltraRLError(f"bench config {path}: method names must be unique, got {names}")
    unknown = sorted(set(config.tasks) - set(config.envs))
    if unknown:
        raise UltraRLError(f"bench config {path}: tasks name environments not in envs: {', '.join(unknown)}")
    for spec in config.methods:  # a bad setting fails now, not hours into the grid
        for env_id in config.envs:
            try:
                run_settings(config, spec, env_id, config.for_env(env_id).seeds[0], Path("agent.zip"), path.parent)
            except UltraRLError as exc:
                raise UltraRLError(f"bench config {path}, method {spec.name}: {exc}") from exc
    return config


def check_env_names(config: BenchConfig, names: list[str]) -> list[str]:
    """``ultrarl bench --envs``: the named environments must be the config's tasks."""
    return _known_names(names, config.envs, "--envs", "environments")


def check_method_names(config: BenchConfig, names: list[str]) -> list[str]:
    """``ultrarl bench --only``: the named methods must be the config's."""
    return _known_names(names, [m.name for m in config.methods], "--only", "methods")


def _known_names(names: list[str], known: list[str], flag: str, what: str) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UltraRLError(f"{flag} names {what} the bench config does not have: {', '.join(unknown)} "
                           f"(it has: {', '.join(known)})")
    return names


@dataclass(frozen=True)
class Job:
    """One unit of work; ``kind`` is agent, expert or run. Picklable for processes and Ray."""

    kind: str
    env_id: str
    seed: int
    bench_dir: str
    config: dict[str, Any]
    method: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        if self.kind == "run":
            assert self.method is not None
            return f"{self.env_id} {self.method['name']} seed {self.seed}"
        return f"{self.kind} {self.env_id}" + (f" seed {self.seed}" if self.kind == "agent" else "")


@dataclass
class JobResult:
    job: Job
    status: str  # done, skipped (finished before), failed
    message: str = ""
    wall_time_s: float = 0.0
    after_mean: float | None = None


# A worker process that dies (a crash in native code, the memory killer) takes the pool with it:
# the jobs it had not finished fail with this line instead of the bench ending in a traceback;
# finished runs stay, and a started one resumes from its checkpoint on the next command.
WORKER_DIED = "a worker process died abruptly (a crash in native code, or out of memory); run the same command again"


def agent_path(bench_dir: Path, config: BenchConfig, env_id: str, seed: int) -> Path:
    return files.grid_agent_path(bench_dir, config.agents, env_id, seed)


def expert_env(config: BenchConfig, env_id: str) -> str:
    return config.expert_envs.get(env_id, env_id)


def expert_path(bench_dir: Path, config: BenchConfig, env_id: str) -> Path:
    if env_id in config.experts:
        return Path(config.experts[env_id])
    return files.bench_expert_path(bench_dir, expert_env(config, env_id))


# Every job trains with one torch thread, however many workers share the cores: torch's thread
# count changes float reductions, so a row must not depend on --workers (nor change when a run
# killed under one --workers resumes under another).
BENCH_TORCH_THREADS = 1


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _execute(job: Job) -> JobResult:
    """Run one job in this process, with ``BENCH_TORCH_THREADS``; every failure becomes a
    result, never an exception."""
    with _torch_threads(BENCH_TORCH_THREADS):
        return _execute_job(job)


def _execute_job(job: Job) -> JobResult:
    start = time.perf_counter()
    bench_dir = Path(job.bench_dir)
    config = BenchConfig.model_validate(job.config)
    try:
        if job.kind == "agent":
            task = config.for_env(job.env_id)
            status = _pretrain(agent_path(bench_dir, config, job.env_id, job.seed), job.env_id,
                               task.pretrain_timesteps, job.seed, task.settings.get("gym_packages"))
            return JobResult(job, status, wall_time_s=time.perf_counter() - start)
        if job.kind == "expert":
            status = _pretrain(expert_path(bench_dir, config, job.env_id), job.env_id, config.expert_timesteps,
                               EXPERT_SEED, config.for_env(job.env_id).settings.get("gym_packages"))
            return JobResult(job, status, wall_time_s=time.perf_counter() - start)
        assert job.method is not None
        run_dir = files.bench_run_dir(bench_dir, job.env_id, job.method["name"], job.seed)
        run_dir.mkdir(parents=True, exist_ok=True)
        # A run's own progress lines go to its log; the grid prints one line per job.
        with open(run_dir / files.LOG, "a") as log, contextlib.redirect_stdout(log):
            return _run(job, bench_dir, config, start)
    except UltraRLError as exc:
        message = str(exc)
    except Exception as exc:  # a bug in one run must not take the grid down; it is reported
        message = f"{type(exc).__name__}: {exc}"
        if job.kind == "run":
            assert job.method is not None
            log = files.bench_run_dir(bench_dir, job.env_id, job.method["name"], job.seed) / files.ERROR_LOG
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
    if job.kind == "run":
        assert job.method is not None
        error = files.bench_run_dir(bench_dir, job.env_id, job.method["name"], job.seed) / files.ERROR
        error.parent.mkdir(parents=True, exist_ok=True)
        error.write_text(message + "\n")
    return JobResult(job, "failed", message, time.perf_counter() - start)


def _pretrain(path: Path, env_id: str, timesteps: int, seed: int, gym_packages: str | None) -> str:
    if path.exists():
        return "skipped"
    settings = PretrainSettings(env_id=env_id, timesteps=timesteps, seed=seed, out=str(path), gym_packages=gym_packages)
    pretrain(settings, progress_bar=False)
    return "done"


def _run(job: Job, bench_dir: Path, config: BenchConfig, start: float) -> JobResult:
    assert job.method is not None
    spec = MethodSpec.model_validate(job.method)
    run_dir = files.bench_run_dir(bench_dir, job.env_id, spec.name, job.seed)
    agent = agent_path(bench_dir, config, job.env_id, job.seed)
    if not agent.exists():
        raise UltraRLError(f"the sub-optimal agent {agent} was not trained (its job failed)")
    settings = run_settings(config, spec, job.env_id, job.seed, agent, bench_dir)
    _check_inputs(run_dir, settings)
    if (run_dir / files.CONFIG).exists():
        after = files.read_json(run_dir / files.EVAL)["after"]
        return JobResult(job, "skipped", wall_time_s=0.0, after_mean=after["mean"])
    if not get_method(spec.method, refining=False).refines:
        return _evaluate_only(job, run_dir, settings, start)
    resume = (run_dir / files.STARTED).exists()
    run_dir = files.prepare_run_dir(run_dir, overwrite=False, resume=resume)
    outcome = refine_agent(settings, run_dir, progress_bar=False, resume=resume,
                           before=_none_run_evaluation(bench_dir, config, job, settings, run_dir))
    return JobResult(job, "done", "resumed" if resume else "", time.perf_counter() - start, outcome.after.mean)


def _none_run_evaluation(
    bench_dir: Path, config: BenchConfig, job: Job, settings: RefineSettings, run_dir: Path
) -> EvalResult | None:
    """The evaluation of this seed's evaluation-only run (``none``), where it has finished from the
    same agent file as ``run_dir``'s on this run's episodes: the run's evaluation before
    refinement is that one, not a second run of it. None where there is no such run."""
    agent = _agent_sha256(run_dir)
    for spec in config.methods:
        done = files.bench_run_dir(bench_dir, job.env_id, spec.name, job.seed)
        if (get_method(spec.method, refining=False).refines or not (done / files.CONFIG).exists()
                or agent is None or _agent_sha256(done) != agent):
            continue
        result = EvalResult(**files.read_json(done / files.EVAL)["after"])
        if is_evaluation_for(result, settings):
            return result
    return None


def _agent_sha256(run_dir: Path) -> str | None:
    """The SHA-256 of the agent file a bench run started from (``_check_inputs``), if recorded."""
    inputs = run_dir / files.BENCH_INPUTS
    return files.read_json(inputs).get("agent_sha256") if inputs.exists() else None


def _check_inputs(run_dir: Path, settings: RefineSettings) -> None:
    """A run is skipped or resumed only if it started from the same agent and expert files as
    the grid names now (a re-made agent would otherwise leave stale rows). A run directory
    without the record (an older bench's) is taken as it is."""
    inputs = {"agent_sha256": files.file_sha256(Path(settings.agent))}
    if settings.expert is not None and Path(settings.expert).is_file():  # a missing one fails the run, as before
        inputs["expert_sha256"] = files.file_sha256(Path(settings.expert))
    path = run_dir / files.BENCH_INPUTS
    if path.exists():
        changed = [name.removesuffix("_sha256") for name, digest in files.read_json(path).items()
                   if name in inputs and inputs[name] != digest]
        if changed:
            raise UltraRLError(f"{run_dir} was run from another {' and '.join(changed)} than this bench's "
                               "(SHA-256 differs): move that directory away to run it again")
    elif not ((run_dir / files.CONFIG).exists() or (run_dir / files.STARTED).exists()):
        files.write_json(path, inputs)


def run_settings(
    config: BenchConfig, spec: MethodSpec, env_id: str, seed: int, agent: Path, bench_dir: Path
) -> RefineSettings:
    """The settings of one run: the grid's, then the bench-wide settings (the task's merged over
    them), then the method's."""
    method = get_method(spec.method, refining=False)
    config = config.for_env(env_id)
    values: dict[str, Any] = {
        "env_id": env_id, "agent": str(agent), "seed": seed, "episodes": config.explain_episodes,
        "llm": {"model": config.llm}, "eval_episodes": config.eval_episodes, "timesteps": config.refine_timesteps,
        "method": method.name if method.refines else "ppo",  # an evaluation-only row still needs valid settings
    }
    if method.identify == "expert":
        values["expert"] = str(expert_path(bench_dir, config, env_id))
    return build_settings(RefineSettings, merge(merge(values, config.settings), spec.settings))


def _evaluate_only(job: Job, run_dir: Path, settings: RefineSettings, start: float) -> JobResult:
    """``none``: the sub-optimal agent as it is, evaluated like every refined one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result = evaluate(load_checked_agent(settings.agent, settings.env_id), settings)
    files.write_json(run_dir / files.EVAL, {"before": result.to_dict(), "after": result.to_dict(), "method": "none"})
    files.write_text_atomic(run_dir / files.CONFIG, yaml.safe_dump({"env_id": job.env_id, "agent": settings.agent,
                                                                     "method": "none", "seed": job.seed}))
    return JobResult(job, "done", "", time.perf_counter() - start, result.mean)


def _init_worker(threads: int) -> None:
    # Workers share the cores instead of oversubscribing them. These threads read the embedded
    # LLM's prompt; it generates on one thread everywhere, and torch's count is pinned per job.
    os.environ["ULTRARL_LLM_THREADS"] = str(threads)


def _execute_on_one_core(job: Job) -> JobResult:
    """A Ray task holds one CPU: the embedded LLM uses one thread, as torch does."""
    _init_worker(1)
    return _execute(job)


@dataclass
class GridRunner:
    """Runs job lists on a local process pool or on Ray, reporting each result as it comes."""

    workers: int = 1
    backend: str = "local"
    ray_address: str | None = None
    on_result: Callable[[JobResult, int, int], None] | None = None
    results: list[JobResult] = field(default_factory=list)

    def run(self, jobs: list[Job]) -> list[JobResult]:
        if not jobs:
            return []
        results = self._ray(jobs) if self.backend == "ray" else self._local(jobs)
        self.results += results
        return results

    def _report(self, result: JobResult, done: int, total: int) -> None:
        if self.on_result is not None:
            self.on_result(result, done, total)

    def _local(self, jobs: list[Job]) -> list[JobResult]:
        if self.workers <= 1:
            results = []
            for i, job in enumerate(jobs, 1):
                results.append(_execute(job))
                self._report(results[-1], i, len(jobs))
            return results
        threads = max(1, (os.cpu_count() or 1) // self.workers)
        results = []
        # spawn, not fork: torch and llama.cpp threads do not survive a fork reliably.
        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_execute, job): job for job in jobs}
            for i, future in enumerate(as_completed(futures), 1):
                try:
                    results.append(future.result())
                except BrokenProcessPool:  # a worker died: every job it had not finished fails, the rest stand
                    results.append(JobResult(futures[future], "failed", WORKER_DIED))
                self._report(results[-1], i, len(jobs))
        return results

    def _ray(self, jobs: list[Job]) -> list[JobResult]:
        try:
            import ray
        except ImportError as exc:
            raise UltraRLError("--backend ray needs Ray: pip install 'ultrarl[ray]'") from exc
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=self.ray_address, include_dashboard=False, log_to_driver=False,
                         runtime_env=self._local_runtime_env())
            except Exception as exc:  # unreachable cluster address
                raise UltraRLError(f"cannot connect to the Ray cluster at {self.ray_address}: {exc}") from exc
        try:
            remote = ray.remote(num_cpus=1)(_execute_on_one_core)
            pending = {remote.remote(job): job for job in jobs}
            results = []
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pending.pop(ref)
                    results.append(ray.get(ref))
                    self._report(results[-1], len(results), len(jobs))
            return results
        finally:
            if started_here:
                ray.shutdown()


    def _local_runtime_env(self) -> dict[str, Any] | None:
        """A Ray started here imports what this process can (a user's environment module on its
        path); a cluster's workers need the user's package installed."""
        if self.ray_address is not None:
            return None
        return {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}

def plan_jobs(config: BenchConfig, bench_dir: Path) -> tuple[list[Job], list[Job], list[Job]]:
    """(agents, experts, runs): agents and experts first, since the runs need them."""
    data = config.model_dump(mode="json")
    agents = [Job("agent", env, seed, str(bench_dir), data) for env in config.envs
              for seed in config.for_env(env).seeds if env not in config.agents]
    wants_oracle = any(METHODS[m.method].identify == "expert" for m in config.methods)
    expert_envs = sorted({expert_env(config, env) for env in config.envs if env not in config.experts})
    experts = [Job("expert", env, EXPERT_SEED, str(bench_dir), data) for env in expert_envs] if wants_oracle else []
    runs = [
        Job("run", env, seed, str(bench_dir), data, method.model_dump())
        for env in config.envs
        for method in config.methods
        for seed in config.for_env(env).seeds
    ]
    return agents, experts, runs


def run_grid(config: BenchConfig, bench_dir: Path, runner: GridRunner, only: list[str] | None = None,
             envs: list[str] | None = None) -> list[JobResult]:
    """Every job of the grid not finished yet; with ``only``, the runs of those methods alone, with
    ``envs`` those of these tasks alone (bench.yaml and the report keep the whole grid: the others'
    runs count where they exist)."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    files.write_text_atomic(bench_dir / files.BENCH_CONFIG, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    planned = config
    if only is not None:
        check_method_names(config, only)
        planned = planned.model_copy(update={"methods": [m for m in config.methods if m.name in only]})
    if envs is not None:
        check_env_names(config, envs)
        planned = planned.model_copy(update={"envs": [e for e in config.envs if e in envs]})
    agents, experts, runs = plan_jobs(planned, bench_dir)
    # Agents and experts are independent of each other: one pool for both, then the runs.
    return runner.run([*agents, *experts]) + runner.run(runs)


def failed(results: Iterable[JobResult]) -> list[JobResult]:
    return [r for r in results if r.status == "failed"]
