"""ULTRA's modulation for off-policy agents (SAC, TD3, DQN): the same decisions as ``GuidedPPO``,
at the two places where SB3's off-policy loop chooses and stores a transition.

- ``_sample_action``: at a matched state the suggestion replaces the agent's action (ULTRA-A), so
  the replay buffer holds the action that was executed; an off-policy learner needs no
  importance correction for it.
- ``_store_transition``: the implicit reward, which rates the agent's own action, is added to the
  stored reward where that action ran (ULTRA-R); Monitor, inside the environment, sees the true
  reward, so the logged return is the environment's.
- ``train``: after the algorithm's gradient steps, steps of the supervised term regress the
  actor's deterministic action on the suggestions (DQN: the cross-entropy of its Q-values taken
  as logits): enough steps to see each advised state as often as the gradient steps see each
  replayed transition, at most one per gradient step (``refine/supervised.py``). With trust (the
  safeguard), SAC and TD3 imitate a suggestion only where their critic values it above the
  actor's own action (a Q-filter); DQN, whose greedy action is its critic's best, imitates all.
A refinement acts with the agent's own policy from its first step: the uniform warm-up of
``learning_starts`` is for training from scratch, and would replace a trained agent by noise;
updates start once the replay buffer holds ``learning_starts`` transitions, for continued
training (``ppo``'s counterpart) and guided methods alike. For the same reason a DQN agent
explores with the ε its training ended with (``exploration_final_eps``), not the schedule's start.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise

from ultrarl.refine.agent_files import policy_observations
from ultrarl.refine.modulation import Modulation
from ultrarl.refine.supervised import SupervisedTerm, box_imitation_loss


class GuidedOffPolicyMixin:
    """The modulation of an SB3 off-policy algorithm; put before the algorithm class.

    :param modulation: the table, the method's switches and settings (``None``: continued training)
    Every other parameter is the algorithm's.
    """

    modulation: Modulation | None

    def __init__(self, *args: Any, modulation: Modulation | None = None, **kwargs: Any) -> None:
        self.modulation = modulation
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def _setup_model(self) -> None:
        super()._setup_model()  # type: ignore[misc]
        capacity = self.modulation.settings.bc_memory if self.modulation is not None else 1
        action_shape = () if isinstance(self.action_space, spaces.Discrete) else self.action_space.shape  # type: ignore[attr-defined]
        self.supervised = SupervisedTerm(self._imitated_parameters(), self.policy.optimizer_class,  # type: ignore[attr-defined]
                                         {"lr": self.lr_schedule(1.0), **self.policy.optimizer_kwargs},  # type: ignore[attr-defined]
                                         capacity, self.observation_space.shape, action_shape,  # type: ignore[attr-defined]
                                         self.seed or 0)  # type: ignore[attr-defined]
        self._implicit = np.zeros(0, dtype=np.float32)

    def _excluded_save_params(self) -> list[str]:
        # The saved zip is a plain SB3 model: guidance lives in the run directory.
        return [*super()._excluded_save_params(), "modulation", "supervised", "_implicit"]  # type: ignore[misc]

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run", progress_bar=False):  # type: ignore[no-untyped-def]
        if reset_num_timesteps:  # the schedules of a refinement start at its beginning
            self._current_progress_remaining = 1.0
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)  # type: ignore[misc]
        if self.modulation is not None and self.supervised.memory.size == 0:
            self.supervised.remember_table(self.modulation, self._policy_obs)
        return result

    def _policy_obs(self, raw: np.ndarray) -> np.ndarray:
        return policy_observations(self._vec_normalize_env, raw)  # type: ignore[attr-defined]

    def _raw_obs(self) -> np.ndarray:
        """Observations as the environment produced them: the table is in that space."""
        raw = self._last_original_obs if self._vec_normalize_env is not None else self._last_obs  # type: ignore[attr-defined]
        return np.asarray(raw)

    def _sample_action(self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
                       ) -> tuple[np.ndarray, np.ndarray]:
        actions, buffer_actions = super()._sample_action(0, action_noise, n_envs)  # type: ignore[misc]
        self._implicit = np.zeros(n_envs, dtype=np.float32)
        if self.modulation is None:
            return actions, buffer_actions
        advice = self.modulation.advise(self._raw_obs(), actions, self.action_space,  # type: ignore[attr-defined]
                                        self._current_progress_remaining)
        if advice.matched.any() and self.modulation.imitates:  # off-policy learners do not judge advice
            self.supervised.memory.add(np.asarray(self._last_obs)[advice.matched], advice.suggested)  # type: ignore[attr-defined]
        if advice.override.any():
            suggested = advice.suggested[advice.override[advice.matched]]
            actions, buffer_actions = actions.copy(), buffer_actions.copy()
            actions[advice.override] = suggested
            buffer_actions[advice.override] = (self.policy.scale_action(suggested)  # type: ignore[attr-defined]
                                               if isinstance(self.action_space, spaces.Box) else suggested)  # type: ignore[attr-defined]
        self._implicit = advice.implicit
        return actions, buffer_actions

    def _store_transition(self, replay_buffer: ReplayBuffer, buffer_action: np.ndarray, new_obs: np.ndarray,
                          reward: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        if self.modulation is not None:
            self.modulation.end_episodes(dones)
            if self.modulation.shape_rewards:
                shaping = (self.modulation.beta_absolute * self._implicit).astype(np.float32)
                reward = reward + shaping
                if self._vec_normalize_env is not None:  # SB3 stores the unnormalised reward  # type: ignore[attr-defined]
                    self._vec_normalize_env.old_reward = self._vec_normalize_env.old_reward + shaping  # type: ignore[attr-defined]
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]

    def collect_rollouts(self, env, callback, train_freq, replay_buffer, action_noise=None, learning_starts=0,  # type: ignore[no-untyped-def]
                         log_interval=None):
        if self.modulation is not None:
            self.modulation.stats.start_rollout()
        result = super().collect_rollouts(env, callback, train_freq, replay_buffer, action_noise,  # type: ignore[misc]
                                          learning_starts, log_interval)
        if self.modulation is not None:
            for key, value in self.modulation.stats.end_rollout().items():
                self.logger.record(key, value)  # type: ignore[attr-defined]
        return result

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        super().train(gradient_steps, batch_size)  # type: ignore[misc]
        if self.modulation is None or self.supervised.memory.size == 0:
            return
        weight = self.modulation.bc_weight(self._current_progress_remaining)
        if weight > 0:
            self.policy.set_training_mode(True)  # type: ignore[attr-defined]
            learning_rate = self.lr_schedule(self._current_progress_remaining)  # type: ignore[attr-defined]
            replayed = self.replay_buffer.size() * self.n_envs  # type: ignore[attr-defined]
            loss = self.supervised.train(self._imitation_loss, weight * learning_rate,
                                         self.supervised.steps_after(gradient_steps, replayed), batch_size,
                                         None, self.device)  # type: ignore[attr-defined]
            self.logger.record("refine/bc_loss", loss)  # type: ignore[attr-defined]

    def _imitation_loss(self, obs: th.Tensor, suggested: th.Tensor) -> th.Tensor:
        """The actor's deterministic action (in [-1, 1], already within the bounds) against the
        suggestion, rescaled to [-1, 1]."""
        assert isinstance(self.action_space, spaces.Box)  # type: ignore[attr-defined]
        low = th.as_tensor(self.action_space.low, device=self.device)  # type: ignore[attr-defined]
        high = th.as_tensor(self.action_space.high, device=self.device)  # type: ignore[attr-defined]
        scaled = 2 * (suggested - low) / (high - low) - 1
        ones = th.ones_like(low)
        action = self._actor_action(obs)
        return box_imitation_loss(action, scaled, -ones, ones, self._q_filter(obs, scaled, action))

    def _q_filter(self, obs: th.Tensor, advised: th.Tensor, own: th.Tensor) -> th.Tensor | None:
        """1 where the critic values the advice above the actor's own action (trust), else 0."""
        if self.modulation is None or not self.modulation.trusts:
            return None
        with th.no_grad():
            q_advised = th.min(th.cat(self.critic(obs, advised), dim=1), dim=1).values  # type: ignore[attr-defined]
            q_own = th.min(th.cat(self.critic(obs, own.detach()), dim=1), dim=1).values  # type: ignore[attr-defined]
        return (q_advised > q_own).float()

    def _actor_action(self, obs: th.Tensor) -> th.Tensor:
        raise NotImplementedError

    def _imitated_parameters(self) -> Any:
        return self.actor.parameters()  # type: ignore[attr-defined]


class GuidedSAC(GuidedOffPolicyMixin, SAC):
    """SAC with ULTRA's modulation."""

    def _actor_action(self, obs: th.Tensor) -> th.Tensor:
        return self.actor(obs, deterministic=True)


class GuidedTD3(GuidedOffPolicyMixin, TD3):
    """TD3 with ULTRA's modulation."""

    def _actor_action(self, obs: th.Tensor) -> th.Tensor:
        return self.actor(obs)


class GuidedDQN(GuidedOffPolicyMixin, DQN):
    """DQN with ULTRA's modulation; it explores with the ε its training ended with."""

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run", progress_bar=False):  # type: ignore[no-untyped-def]
        final = self.exploration_final_eps
        self.exploration_schedule = lambda _progress: final
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def _imitated_parameters(self) -> Any:
        return self.q_net.parameters()

    def _imitation_loss(self, obs: th.Tensor, suggested: th.Tensor) -> th.Tensor:
        return th.nn.functional.cross_entropy(self.q_net(obs), suggested.long().flatten())
