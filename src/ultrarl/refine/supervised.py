"""The supervised term (ours): after each update of the RL algorithm, regress the policy's action
on the suggestions at the advised states seen so far (the table's entries, every matched state).

PPO's clipped ratio caps what an executed suggestion can teach, and an off-policy learner only
learns it through its critic; this term teaches the advice directly, weighted by ``bc_weight``
and annealed with the override probability (docs/METHOD.md). It has an Adam optimiser of its
own: sharing the RL algorithm's let Adam's momentum from the RL update move the policy on every
supervised step, also where the imitation loss had no gradient at all. Adam's step does not
scale with its loss, so the weight scales the learning rate instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch as th

from ultrarl.refine.modulation import Modulation


class AdviceMemory:
    """A ring buffer of (policy observation, suggested action) pairs."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...]) -> None:
        self.observations = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((capacity, *action_shape), dtype=np.float32)
        self.capacity = capacity
        self.size = 0
        self._next = 0

    def add(self, observations: np.ndarray, actions: np.ndarray) -> None:
        for obs, action in zip(observations, actions):
            self.observations[self._next] = obs
            self.actions[self._next] = action
            self._next = (self._next + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def state(self) -> dict[str, Any]:
        return {"observations": self.observations[:self.size].copy(), "actions": self.actions[:self.size].copy(),
                "next": self._next}

    def load_state(self, state: dict[str, Any]) -> None:
        self.size = len(state["observations"])
        self.observations[:self.size] = state["observations"]
        self.actions[:self.size] = state["actions"]
        self._next = int(state["next"])

    def sample_batches(self, batch_size: int, n_batches: int, rng: np.random.Generator
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for _ in range(n_batches):
            index = rng.integers(self.size, size=min(batch_size, self.size))
            yield self.observations[index], self.actions[index]


# The imitation loss of one algorithm: (policy observations, suggestions in environment units) -> loss.
ImitationLoss = Callable[[th.Tensor, th.Tensor], th.Tensor]


class SupervisedTerm:
    """Memory, random stream and optimiser of the supervised term.

    :param parameters: the policy parameters the term trains (the actor's)
    :param optimizer_class: the algorithm's optimiser class (SB3's ``optimizer_class``)
    :param optimizer_kwargs: its keyword arguments
    :param capacity: advised states kept (``bc_memory``)
    :param obs_shape: the policy's observation shape
    :param action_shape: the action shape (``()`` for discrete actions)
    :param seed: seed of the minibatch draws
    """

    def __init__(self, parameters: Iterable[th.nn.Parameter], optimizer_class: type[th.optim.Optimizer],
                 optimizer_kwargs: dict[str, Any], capacity: int, obs_shape: tuple[int, ...],
                 action_shape: tuple[int, ...], seed: int) -> None:
        self.parameters = list(parameters)
        self.optimizer = optimizer_class(self.parameters, **optimizer_kwargs)
        self.memory = AdviceMemory(capacity, obs_shape, action_shape)
        self.rng = np.random.default_rng(seed)

    def remember_table(self, modulation: Modulation, to_policy: Callable[[np.ndarray], np.ndarray]) -> None:
        """The table's own states and suggestions (the live advisor's, where there is one) seed
        the memory; ``to_policy`` maps raw observations to the policy's."""
        table = modulation.table
        if len(table) == 0 or not modulation.imitates:
            return
        suggested = table.suggested_actions
        if modulation.advisor is not None:
            suggested = np.asarray(modulation.advisor(table.observations))
        self.memory.add(to_policy(table.observations.astype(np.float32)), suggested)

    def steps_after(self, rl_steps: int, rl_samples: int) -> int:
        """Minibatch steps after an RL update of ``rl_steps`` steps over ``rl_samples`` samples:
        the update's count scaled by the advised states' share of its samples, at most the
        count itself (a minibatch holds at most the memory's size, so a memory smaller than
        one gets fewer passes than the update's samples). A handful of table entries so gets a
        handful of steps, not the 320 of an update with SB3's defaults on those few states
        (docs/METHOD.md). A fractional count is rounded at random, from the term's own stream."""
        expected = rl_steps * min(1.0, self.memory.size / max(rl_samples, 1))
        whole = int(expected)
        return whole + int(expected > whole and self.rng.random() < expected - whole)

    def train(self, loss_fn: ImitationLoss, learning_rate: float, n_batches: int, batch_size: int,
              max_grad_norm: float | None, device: th.device | str) -> float:
        """``n_batches`` minibatch steps on the advised states at ``learning_rate`` (the
        algorithm's, times the term's weight); the mean loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        losses = []
        for obs, suggested in self.memory.sample_batches(batch_size, n_batches, self.rng):
            loss = loss_fn(th.as_tensor(obs, device=device), th.as_tensor(suggested, device=device))
            self.optimizer.zero_grad()
            loss.backward()
            if max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.parameters, max_grad_norm)
            self.optimizer.step()
            losses.append(float(loss.item()))
        return float(np.mean(losses)) if losses else 0.0

    def state(self) -> dict[str, Any]:
        """For an exact resume (``refine/training_state.py``)."""
        return {"memory": self.memory.state(), "rng": self.rng.bit_generator.state,
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.memory.load_state(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        self.optimizer.load_state_dict(state["optimizer"])


def box_imitation_loss(mean: th.Tensor, suggested: th.Tensor, low: th.Tensor, high: th.Tensor,
                       weights: th.Tensor | None = None) -> th.Tensor:
    """Squared distance of the policy's mean action to the suggestion, per dimension in units of
    the action range. Where the suggestion sits on a bound, a mean beyond that bound executes the
    same action and costs nothing; everywhere else the mean itself is pulled, so a saturated mean
    beyond a bound comes back towards a suggestion inside it. ``weights``: one per sample (the
    Q-filter's 0 or 1)."""
    target_high = th.where(suggested >= high, th.minimum(mean, high), mean)
    effective = th.where(suggested <= low, th.maximum(target_high, low), target_high)
    per_sample = (((effective - suggested) / (high - low)) ** 2).sum(dim=-1)
    return (per_sample if weights is None else per_sample * weights).mean()


def segment_returns(rewards: np.ndarray, next_values: np.ndarray, ended: np.ndarray, executed: np.ndarray,
                    starts: np.ndarray, gamma: float) -> np.ndarray:
    """For each executed step of a rollout (arrays of shape (steps, envs)), the discounted return
    to the end of its guided segment, bootstrapped with the value of the state after it (0 where
    the episode ended there); 0 where nothing was executed. A segment ends where the next step
    is not executed, starts a new segment, or the episode ended."""
    returns = np.zeros_like(rewards, dtype=np.float64)
    following = np.zeros(rewards.shape[1], dtype=np.float64)  # the return from the next step on
    for t in range(len(rewards) - 1, -1, -1):
        continues = np.zeros(rewards.shape[1], dtype=bool) if t + 1 == len(rewards) else \
            executed[t + 1] & ~starts[t + 1]
        continues &= ~ended[t]
        bootstrap = np.where(ended[t], 0.0, next_values[t])
        returns[t] = rewards[t] + gamma * np.where(continues, following, bootstrap)
        following = np.where(executed[t], returns[t], 0.0)
    return np.where(executed, returns, 0.0)
