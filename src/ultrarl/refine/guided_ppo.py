"""ULTRA's policy modulation inside PPO's rollout collection, and the supervised term.

The override happens here, in the rollout loop, and not in an environment wrapper: the rollout
buffer must hold the action that was executed, with its log-probability and value under the
current policy, or PPO's importance ratios would be computed for actions that never ran.
The environment's own reward reaches the Monitor wrapper untouched, so the true return is what
``charts/episodic_return`` and evaluation report.

PPO's clipped ratio caps what one executed suggestion can teach (about log 1.2 of
log-probability per update, and a negative advantage pushes away from it). With ``bc_weight``
> 0, in a method that executes suggestions, each update is followed by a supervised phase of
``n_epochs`` passes over the advised states seen so far (at most as many minibatch steps as a
full update): the policy's mean action is regressed on the advice (``box_imitation_loss``);
discrete policies get the cross-entropy. Its weight scales the phase's learning rate and
anneals with the override probability (ours; see docs/METHOD.md).

With trust (the safeguard), an executed step enters the advised states only once the rollout
shows that its plan beat the agent: its return to the end of the plan, bootstrapped with the
agent's value there, exceeds the agent's value where it was taken by a margin
(``trust_margin`` of |that value|, at least ``Modulation.trust_floor``). An
executed step that did not gets no advantage in PPO's update. Each plan's verdict at its first
step goes back to the modulation, which stops executing advice that never beats the agent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ultrarl.refine.agent_files import in_training_units, policy_observations
from ultrarl.refine.modulation import Modulation, StepAdvice
from ultrarl.refine.supervised import SupervisedTerm, box_imitation_loss, segment_returns


class GuidedPPO(PPO):
    """PPO whose rollouts are modulated by a guidance table. Without one, it is plain PPO.

    :param modulation: the table, the method's switches and settings (``None``: plain PPO)
    Every other parameter is SB3's ``PPO``'s.
    """

    def __init__(self, *args: Any, modulation: Modulation | None = None, **kwargs: Any) -> None:
        self.modulation = modulation
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        # ``modulation`` is set by the constructor, or by ``load`` from its keyword arguments, before this.
        action_shape = () if isinstance(self.action_space, spaces.Discrete) else self.action_space.shape
        capacity = self.modulation.settings.bc_memory if self.modulation is not None else 1
        self.supervised = SupervisedTerm(self.policy.parameters(), self.policy.optimizer_class,
                                         {"lr": self.lr_schedule(1.0), **self.policy.optimizer_kwargs}, capacity,
                                         self.observation_space.shape, action_shape, self.seed or 0)  # type: ignore[arg-type]

    def _excluded_save_params(self) -> list[str]:
        # The saved zip is a plain policy: guidance lives in the run directory, not in the model.
        return [*super()._excluded_save_params(), "modulation", "supervised", "_advice_record"]

    def _setup_learn(self, total_timesteps, callback=None, reset_num_timesteps=True, tb_log_name="run", progress_bar=False):  # type: ignore[no-untyped-def]
        # A loaded agent carries the progress of its own training (often slightly below 0):
        # the schedules of a refinement start at the beginning of the refinement.
        if reset_num_timesteps:
            self._current_progress_remaining = 1.0
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if self.modulation is not None and self.supervised.memory.size == 0 and not self.modulation.trusts:
            self.supervised.remember_table(self.modulation, self._policy_obs)
        return result

    def _policy_obs(self, raw: np.ndarray) -> np.ndarray:
        return policy_observations(self._vec_normalize_env, raw)

    def _raw_obs(self, env: VecEnv) -> np.ndarray:
        """Observations as the environment produced them: the table is in that space."""
        if isinstance(env, VecNormalize):
            return env.get_original_obs()
        return np.asarray(self._last_obs)

    def _modulate(
        self, env: VecEnv, obs_tensor: th.Tensor, actions: np.ndarray, values: th.Tensor, log_probs: th.Tensor
    ) -> tuple[np.ndarray, th.Tensor, th.Tensor, np.ndarray]:
        """Override actions at matched states; return the implicit reward per env (0 if unmatched)."""
        if self.modulation is None:
            return actions, values, log_probs, np.zeros(env.num_envs, dtype=np.float32)
        own = self._env_actions(actions)
        advice = self.modulation.advise(self._raw_obs(env), own, self.action_space, self._current_progress_remaining)
        if advice.matched.any() and self.modulation.imitates and not self.modulation.trusts:
            self.supervised.memory.add(np.asarray(self._last_obs)[advice.matched], advice.suggested)
        self._advice_record.append(advice)
        if advice.override.any():
            actions = self._with_overrides(actions, advice)
            # Value does not depend on the action, the log-probability does: evaluate the
            # executed actions under the current policy, exactly as PPO's update will.
            values, log_probs, _ = self.policy.evaluate_actions(obs_tensor, th.as_tensor(actions, device=self.device))
            values = values.flatten()
        return actions, values, log_probs, advice.implicit

    def _with_overrides(self, actions: np.ndarray, advice: StepAdvice) -> np.ndarray:
        suggested = advice.suggested[advice.override[advice.matched]]
        if isinstance(self.action_space, spaces.Box) and self.policy.squash_output:
            suggested = self.policy.scale_action(suggested)  # the buffer holds actions in [-1, 1]
        actions = actions.copy()
        actions[advice.override] = suggested
        return actions

    def _env_actions(self, actions: np.ndarray) -> np.ndarray:
        """Policy outputs as the environment receives them."""
        if not isinstance(self.action_space, spaces.Box):
            return actions
        if self.policy.squash_output:
            return self.policy.unscale_action(actions)
        return np.clip(actions, self.action_space.low, self.action_space.high)

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        assert self._last_obs is not None, "no previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        if self.modulation is not None:
            self.modulation.stats.start_rollout()
        self._advice_record: list[StepAdvice] = []
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
            new_obs, rewards, dones, infos = env.step(self._env_actions(actions))
            self.num_timesteps += env.num_envs
            if self.modulation is not None:
                self.modulation.end_episodes(dones)

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            train_rewards = self._training_rewards(rewards, implicit, dones, infos)
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
        if self.modulation is not None and self.modulation.trusts and self._advice_record:
            self._judge_advice(rollout_buffer, last_values.flatten().numpy(), np.asarray(dones, dtype=bool))
        self._log_modulation()
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _judge_advice(self, buffer: RolloutBuffer, last_values: np.ndarray, last_dones: np.ndarray) -> None:
        """Did each executed plan beat the agent? Its return to the plan's end (bootstrapped with
        the value there) against the agent's value at each executed step; steps that beat it by the
        margin are imitated, and each plan's verdict at its first step is recorded (``Modulation``)."""
        assert self.modulation is not None
        override = np.stack([a.override for a in self._advice_record])  # (steps, envs)
        starts = np.stack([a.starts for a in self._advice_record])
        entries = np.stack([a.entries for a in self._advice_record])
        rewards, values = buffer.rewards, buffer.values
        next_values = np.concatenate([values[1:], last_values[None]])
        ended = np.concatenate([buffer.episode_starts[1:], last_dones[None]]).astype(bool)
        returns = segment_returns(rewards, next_values, ended, override, starts, self.gamma)
        floor = in_training_units(self._vec_normalize_env, np.float32(self.modulation.trust_floor))
        margins = self.modulation.settings.trust_margin * np.abs(values) + floor
        beat = override & (returns - values > margins)
        # Executed advice that did not beat the agent teaches the policy nothing, in either direction
        # (its value targets stay): PPO's update would otherwise push the policy away from
        # arbitrary actions it never chose, which moves its mean as much as following them would.
        buffer.advantages[override & ~beat] = 0.0
        self.modulation.record_outcome(entries[starts], beat[starts])
        self.modulation.record_imitation(int(beat.sum()), int((override & ~beat).sum()))
        if beat.any() and self.modulation.imitates:
            executed = (buffer.actions[..., 0].astype(np.int64) if isinstance(self.action_space, spaces.Discrete)
                        else self._env_actions(buffer.actions))
            self.supervised.memory.add(buffer.observations[beat], executed[beat])

    def _training_rewards(
        self, rewards: np.ndarray, implicit: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> np.ndarray:
        """Environment reward plus β·r_LLM (ULTRA-R), bootstrapped through time-limit truncations
        as SB3's PPO does."""
        train_rewards = rewards.astype(np.float32)
        if self.modulation is not None and self.modulation.shape_rewards:
            # β·r_LLM is in raw reward units; the rewards here are VecNormalize's where it scales them.
            shaping = (self.modulation.beta_absolute * implicit).astype(np.float32)
            train_rewards = train_rewards + in_training_units(self._vec_normalize_env, shaping)
        for idx, done in enumerate(dones):
            if done and infos[idx].get("terminal_observation") is not None and infos[idx].get(
                "TimeLimit.truncated", False
            ):
                terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                with th.no_grad():
                    terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                # SB3's own expression, γ·V in float32, so that advice that never applies trains bit
                # for bit as PPO (γ·V in float64, rounded once, differs in ~1 bootstrap in 10).
                train_rewards[idx] += self.gamma * terminal_value
        return train_rewards

    def _log_modulation(self) -> None:
        if self.modulation is None:
            return
        for key, value in self.modulation.stats.end_rollout().items():
            self.logger.record(key, value)
        self.logger.record("refine/override_prob", self.modulation.override_prob(self._current_progress_remaining))

    def train(self) -> None:
        super().train()
        if self.modulation is None or self.supervised.memory.size == 0:
            return
        weight = self.modulation.bc_weight(self._current_progress_remaining)
        if weight > 0:
            self.logger.record("refine/bc_loss", self._supervised_phase(weight))

    def _supervised_phase(self, weight: float) -> float:
        """``n_epochs`` passes over the advised states in minibatches of ``batch_size``, at most as
        many steps as PPO's full update."""
        self.policy.set_training_mode(True)
        rollout_size = self.n_steps * self.n_envs
        n_batches = self.supervised.steps_after(self.n_epochs * max(1, rollout_size // self.batch_size),
                                                rollout_size)
        return self.supervised.train(self._imitation_loss, weight * self.lr_schedule(self._current_progress_remaining),
                                     n_batches, self.batch_size, self.max_grad_norm, self.device)

    def _imitation_loss(self, obs: th.Tensor, suggested: th.Tensor) -> th.Tensor:
        distribution = self.policy.get_distribution(obs).distribution
        if isinstance(self.action_space, spaces.Discrete):
            return th.nn.functional.cross_entropy(distribution.logits, suggested.long().flatten())  # type: ignore[union-attr]
        low = th.as_tensor(self.action_space.low, device=self.device)
        high = th.as_tensor(self.action_space.high, device=self.device)
        mean = distribution.mean  # type: ignore[union-attr]
        if self.policy.squash_output:
            mean, suggested = th.tanh(mean), 2 * (suggested - low) / (high - low) - 1
            low, high = -th.ones_like(low), th.ones_like(high)
        return box_imitation_loss(mean, suggested, low, high)
