"""Training callbacks: what refinement does to the true environment return, and when pretraining
has reached a plateau."""

from __future__ import annotations

from collections.abc import Callable

from stable_baselines3.common.callbacks import BaseCallback


class TrueReturnLogger(BaseCallback):
    """Logs ``charts/episodic_return``: the environment's own return (from the Monitor wrapper),
    never the shaped training reward. Keeps every finished episode for learning curves."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes: list[tuple[int, float, int]] = []  # (timestep, return, length)
        self._rollout_returns: list[float] = []

    def _on_rollout_start(self) -> None:
        self._rollout_returns = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is not None:
                self.episodes.append((self.num_timesteps, float(episode["r"]), int(episode["l"])))
                self._rollout_returns.append(float(episode["r"]))
        return True

    def _on_rollout_end(self) -> None:
        if self._rollout_returns:
            self.logger.record("charts/episodic_return", sum(self._rollout_returns) / len(self._rollout_returns))


class EveryTrainedSteps(BaseCallback):
    """Acts (``_act``) once ``every`` more steps have been collected *and trained on*: at the start
    of a rollout, which SB3 calls after the update on the previous one (at the end of a rollout
    the step counter already counts steps the weights have not learnt from). With PPO it acts on
    the first rollout boundary at or past each multiple of ``every``; a resumed run goes on from
    its step counter's next multiple.

    :param every: steps between actions
    """

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.next_at = every

    def _on_training_start(self) -> None:
        self._schedule()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_at:
            self._act()
            self._schedule()

    def _schedule(self) -> None:
        self.next_at = (self.num_timesteps // self.every + 1) * self.every

    def _act(self) -> None:
        raise NotImplementedError


class PeriodicEvaluation(EveryTrainedSteps):
    """Evaluates the policy every ``every`` trained steps and at the end of training, appending
    (timestep, mean, std) to ``evaluations``: the last one is the final policy's. ``evaluate`` must
    act deterministically in environments of its own, so that training goes on exactly as it
    would without it.

    :param every: steps between evaluations
    :param evaluate: the policy's (mean, std) of the true return, on the same episodes each time
    :param evaluations: where the results go (kept by the caller across resumes)
    """

    def __init__(self, every: int, evaluate: Callable[[], tuple[float, float]],
                 evaluations: list[tuple[int, float, float]]) -> None:
        super().__init__(every)
        self.evaluate = evaluate
        self.evaluations = evaluations

    def _on_training_end(self) -> None:
        if not self.evaluations or self.evaluations[-1][0] < self.num_timesteps:
            self._act()

    def _act(self) -> None:
        mean, std = self.evaluate()
        self.evaluations.append((self.num_timesteps, mean, std))
        self.logger.record("eval/mean_return", mean)


class ExplorationLogger(BaseCallback):
    """Logs RICE's machinery where it is used: the share of episodes started at a critical state
    (``refine/critical_start_rate``) and the mean RND bonus (``refine/rnd_bonus_mean``)."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        env = self.model.get_env()
        if env is None:
            return
        if hasattr(env, "pop_mean_bonus"):
            self.logger.record("refine/rnd_bonus_mean", env.pop_mean_bonus())
        starts = env.get_attr("critical_starts") if env.has_attr("critical_starts") else None
        if starts:
            defaults = env.get_attr("default_starts")
            total = sum(starts) + sum(defaults)
            self.logger.record("refine/critical_start_rate", sum(starts) / total if total else 0.0)


class EvaluationRecord(BaseCallback):
    """Records each evaluation of SB3's ``EvalCallback`` (which calls it after evaluating): the
    pretraining curve that ``ultrarl pretrain`` writes beside the agent."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations: list[tuple[int, float]] = []  # (timestep, mean evaluated return)

    @property
    def best(self) -> float | None:
        """The highest evaluated return (None before the first evaluation)."""
        return max((mean for _, mean in self.evaluations), default=None)

    def _on_step(self) -> bool:
        evaluation = self.parent  # the EvalCallback that just evaluated
        self.evaluations.append((self.num_timesteps, float(evaluation.last_mean_reward)))  # type: ignore[union-attr]
        return True


class PlateauStop(EvaluationRecord):
    """Ends training once the evaluated return has not improved for ``window`` evaluations
    (``ultrarl pretrain --until-plateau``). The rule judges the mean of the last ``smooth``
    evaluations, so one lucky evaluation neither sets the bar nor one unlucky one ends the run
    (PPO's return swings between updates). It improves when it beats the reference (the last
    improvement) by more than ``margin`` x max(|reference|, 1), so noise around a plateau does
    not count as progress.

    :param window: evaluations without improvement that make a plateau
    :param margin: the relative improvement that counts
    :param smooth: evaluations averaged into the judged return (1: each evaluation alone)
    """

    def __init__(self, window: int, margin: float, smooth: int = 1) -> None:
        super().__init__()
        self.window = window
        self.margin = margin
        self.smooth = smooth
        self.reference = -float("inf")
        self.since_improvement = 0
        self.plateaued = False

    @property
    def judged_return(self) -> float:
        """The mean of the last ``smooth`` evaluations (of all of them, before there are that many)."""
        recent = [mean for _, mean in self.evaluations[-self.smooth:]]
        return sum(recent) / len(recent)

    def _on_step(self) -> bool:
        super()._on_step()
        judged = self.judged_return
        if judged > self.reference + self.margin * max(abs(self.reference), 1.0) or self.reference == -float("inf"):
            self.reference, self.since_improvement = max(judged, self.reference), 0
        else:
            self.since_improvement += 1
        self.plateaued = self.since_improvement >= self.window
        return not self.plateaued


class NewBestStep(BaseCallback):
    """``EvalCallback``'s ``callback_on_new_best``: the step at which it last saved its best model."""

    def __init__(self) -> None:
        super().__init__()
        self.timestep: int | None = None

    def _on_step(self) -> bool:
        self.timestep = self.num_timesteps
        return True
