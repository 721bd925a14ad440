"""ULTRA's policy modulation inside PPO's rollout collection.

At a state that matches a guidance-table entry:
- ULTRA-A executes the suggested action (with some probability, annealed to 0 by default);
- ULTRA-R trains on r_env + beta * r_LLM;
- ULTRA-RA does both.

The override happens here, in the rollout loop, and not in an environment wrapper: the rollout
buffer must hold the action that was executed, with its log-probability and value under the
current policy, or PPO's importance ratios would be computed for actions that never ran.
The environment's own reward reaches the Monitor wrapper untouched, so the true return is what
``charts/episodic_return`` and evaluation report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ultrarl.guidance.table import GuidanceTable


@dataclass
class Modulation:
    """How the guidance table modulates rollouts."""

    table: GuidanceTable
    override_actions: bool  # ULTRA-A
    shape_rewards: bool  # ULTRA-R
    override_prob: float = 1.0
    anneal_override: bool = True  # linearly to 0 over the refinement budget
    beta: float = 0.5  # implicit-reward weight, in units of the table's reward scale

    @property
    def beta_absolute(self) -> float:
        return self.beta * self.table.reward_scale


@dataclass
class ModulationStats:
    """Counts over the current rollout and over the whole run."""

    steps: int = 0
    matched: int = 0
    overridden: int = 0
    implicit_reward_sum: float = 0.0
    total: dict[str, float] = field(default_factory=lambda: {"steps": 0, "matched": 0, "overridden": 0})

    def start_rollout(self) -> None:
        self.steps = self.matched = self.overridden = 0
        self.implicit_reward_sum = 0.0

    def end_rollout(self) -> dict[str, float]:
        self.total["steps"] += self.steps
        self.total["matched"] += self.matched
        self.total["overridden"] += self.overridden
        steps = max(self.steps, 1)
        return {
            "refine/match_rate": self.matched / steps,
            "refine/override_rate": self.overridden / steps,
            "refine/implicit_reward_mean": self.implicit_reward_sum / self.matched if self.matched else 0.0,
        }


class GuidedPPO(PPO):
    """PPO whose rollouts are modulated by a guidance table. Without one, it is plain PPO."""

    modulation: Modulation | None = None

    def _excluded_save_params(self) -> list[str]:
        # The saved zip is a plain policy: guidance lives in the run directory, not in the model.
        return [*super()._excluded_save_params(), "modulation", "modulation_stats", "_override_rng"]

    def set_modulation(self, modulation: Modulation | None, seed: int = 0) -> None:
        self.modulation = modulation
        self.modulation_stats = ModulationStats()
        self._override_rng = np.random.default_rng(seed)

    def _raw_obs(self, env: VecEnv) -> np.ndarray:
        """Observations as the environment produced them: the table is in that space."""
        if isinstance(env, VecNormalize):
            return env.get_original_obs()
        return np.asarray(self._last_obs)

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run", progress_bar=False):  # type: ignore[no-untyped-def]
        # A loaded agent carries the progress of its own training (often slightly below 0):
        # the override schedule of a refinement starts at the beginning of the refinement.
        if reset_num_timesteps:
            self._current_progress_remaining = 1.0
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def current_override_prob(self) -> float:
        assert self.modulation is not None
        p = self.modulation.override_prob
        progress = min(1.0, max(0.0, self._current_progress_remaining))
        return p * progress if self.modulation.anneal_override else p

    def _modulate(
        self, env: VecEnv, obs_tensor: th.Tensor, actions: np.ndarray, values: th.Tensor, log_probs: th.Tensor
    ) -> tuple[np.ndarray, th.Tensor, th.Tensor, np.ndarray]:
        """Override actions at matched states; return the implicit reward per env (0 if unmatched)."""
        modulation = self.modulation
        implicit = np.zeros(env.num_envs, dtype=np.float32)
        if modulation is None:
            return actions, values, log_probs, implicit
        stats = self.modulation_stats
        matches = modulation.table.match(self._raw_obs(env))
        matched = matches >= 0
        stats.steps += env.num_envs
        stats.matched += int(matched.sum())
        if not matched.any():
            return actions, values, log_probs, implicit
        if modulation.shape_rewards:
            implicit[matched] = modulation.table.implicit_rewards[matches[matched]]
            stats.implicit_reward_sum += float(implicit[matched].sum())
        if modulation.override_actions:
            override = matched & (self._override_rng.random(env.num_envs) < self.current_override_prob())
            if override.any():
                suggested = modulation.table.suggested_actions[matches[override]]
                if isinstance(self.action_space, spaces.Box) and self.policy.squash_output:
                    suggested = self.policy.scale_action(suggested)  # buffer holds actions in [-1, 1]
                actions = actions.copy()
                actions[override] = suggested
                # Value does not depend on the action, the log-probability does: evaluate the
                # executed actions under the current policy, exactly as PPO's update will.
                action_tensor = th.as_tensor(actions, device=self.device)
                values, log_probs, _ = self.policy.evaluate_actions(obs_tensor, action_tensor)
                values = values.flatten()
                stats.overridden += int(override.sum())
        return actions, values, log_probs, implicit

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        assert self._last_obs is not None, "no previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        if not hasattr(self, "modulation_stats"):
            self.set_modulation(self.modulation)
        self.modulation_stats.start_rollout()
        callback.on_rollout_start()

        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                action_tensor, values, log_probs = self.policy(obs_tensor)
                actions, values, log_probs, implicit = self._modulate(
                    env, obs_tensor, action_tensor.cpu().numpy(), values, log_probs
                )

            executed = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    executed = self.policy.unscale_action(actions)
                else:
                    executed = np.clip(actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(executed)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            # Training reward: environment reward plus the scaled implicit reward (ULTRA-R).
            train_rewards = rewards.astype(np.float32)
            if self.modulation is not None and self.modulation.shape_rewards:
                train_rewards = train_rewards + self.modulation.beta_absolute * implicit
            # Bootstrap through time-limit truncations, as SB3's PPO does.
            for idx, done in enumerate(dones):
                if done and infos[idx].get("terminal_observation") is not None and infos[idx].get(
                    "TimeLimit.truncated", False
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    train_rewards[idx] += self.gamma * float(terminal_value.item())

            buffer_actions = actions.reshape(-1, 1) if isinstance(self.action_space, spaces.Discrete) else actions
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                buffer_actions,
                train_rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        if self.modulation is not None:
            for key, value in self.modulation_stats.end_rollout().items():
                self.logger.record(key, value)
            self.logger.record("refine/override_prob", self.current_override_prob())
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True
