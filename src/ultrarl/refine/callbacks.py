"""Training callbacks: what refinement does to the true environment return, and when pretraining
has reached a plateau."""

from __future__ import annotations

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
        self.best = -float("inf")
        self.evaluations: list[tuple[int, float]] = []  # (timestep, mean evaluated return)

    def _on_step(self) -> bool:
        evaluation = self.parent  # the EvalCallback that just evaluated
        mean = float(evaluation.last_mean_reward)  # type: ignore[union-attr]
        self.evaluations.append((self.num_timesteps, mean))
        self._record(mean)
        return True

    def _record(self, mean: float) -> None:
        self.best = max(self.best, mean)


class PlateauStop(EvaluationRecord):
    """Ends training once the evaluated return has not improved for ``window`` evaluations
    (``ultrarl pretrain --until-plateau``). An evaluation improves when it beats the best so far
    by more than ``margin`` x max(|best|, 1), so noise around a plateau does not count as progress.

    :param window: evaluations without improvement that make a plateau
    :param margin: the relative improvement that counts
    """

    def __init__(self, window: int, margin: float) -> None:
        super().__init__()
        self.window = window
        self.margin = margin
        self.since_best = 0
        self.plateaued = False

    def _on_step(self) -> bool:
        super()._on_step()
        return not self.plateaued

    def _record(self, mean: float) -> None:
        if mean > self.best + self.margin * max(abs(self.best), 1.0) or self.best == -float("inf"):
            self.best, self.since_best = max(mean, self.best), 0
        else:
            self.since_best += 1
        self.plateaued = self.since_best >= self.window
