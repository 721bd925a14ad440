"""Callbacks that log what refinement does to the true environment return."""

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
