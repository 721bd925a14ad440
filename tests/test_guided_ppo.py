"""The parts of ULTRA's modulation that must be exactly right."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnvWrapper

from ultrarl.envs.factory import make_vec_env
from ultrarl.guidance.table import GuidanceTable
from ultrarl.refine.guided_ppo import GuidedPPO
from ultrarl.refine.modulation import Modulation, ModulationSettings
from ultrarl.refine.supervised import SupervisedTerm


class RecordingVecEnv(VecEnvWrapper):
    """Records what the environment really received and returned."""

    def __init__(self, venv):  # type: ignore[no-untyped-def]
        super().__init__(venv)
        self.executed: list[np.ndarray] = []
        self.env_rewards: list[np.ndarray] = []

    def reset(self):  # type: ignore[no-untyped-def]
        return self.venv.reset()

    def step_async(self, actions):  # type: ignore[no-untyped-def]
        self.executed.append(np.array(actions, copy=True))
        self.venv.step_async(actions)

    def step_wait(self):  # type: ignore[no-untyped-def]
        obs, rewards, dones, infos = self.venv.step_wait()
        self.env_rewards.append(np.array(rewards, copy=True))
        return obs, rewards, dones, infos


def _table(env_id: str, suggested: np.ndarray, radius: float, reward: float = 0.5) -> GuidanceTable:
    """A one-entry table centred on the reset state; ``radius`` decides how much it matches."""
    env = make_vec_env(env_id, n_envs=1, seed=0)
    obs = env.reset()
    env.close()
    dim = obs.shape[1]
    return GuidanceTable(
        observations=obs.astype(np.float64),
        suggested_actions=suggested[None],
        implicit_rewards=np.array([reward]),
        sources=np.array([[0, 0]]),
        obs_mean=np.zeros(dim),
        obs_std=np.ones(dim),
        epsilon=radius,
        reward_scale=1.0,
    )


FIXED = ModulationSettings(override_prob=1.0, anneal_override=False, bc_weight=0.0)


def _collect(env_id: str, table: GuidanceTable, override: bool, shape: bool, n_envs: int = 2,
             settings: ModulationSettings = FIXED, env_id_kwargs: dict | None = None):
    env = RecordingVecEnv(make_vec_env(env_id, n_envs=n_envs, seed=0))
    modulation = Modulation(table, override_actions=override, shape_rewards=shape, settings=settings)
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu", modulation=modulation)
    model.set_logger(Logger(None, []))
    _, callback = model._setup_learn(64 * n_envs, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=64)
    return model, env


@pytest.mark.parametrize(
    ("env_id", "suggested", "radius"),
    [
        ("CartPole-v1", np.array(1, dtype=np.int64), 0.5),  # discrete
        ("Pendulum-v1", np.array([1.7], dtype=np.float32), 1.0),  # continuous
    ],
)
def test_buffer_holds_executed_actions_with_their_log_probs(env_id: str, suggested: np.ndarray, radius: float) -> None:
    table = _table(env_id, suggested, radius)
    model, env = _collect(env_id, table, override=True, shape=False)
    buffer = model.rollout_buffer
    stats = model.modulation.stats.total
    assert 0 < stats["overridden"] < stats["steps"], "the test needs both overridden and free steps"

    executed = np.stack(env.executed)  # (n_steps, n_envs[, act_dim])
    stored = buffer.actions.reshape(executed.shape[0], executed.shape[1], -1)
    if env_id == "CartPole-v1":
        np.testing.assert_array_equal(stored[..., 0], executed)
    else:
        # PPO stores the sampled action and executes it clipped to the bounds.
        low, high = model.action_space.low, model.action_space.high
        np.testing.assert_allclose(np.clip(stored, low, high), executed, rtol=0, atol=1e-6)

    # Where the table matched, the executed action is the suggested one.
    obs = buffer.observations.reshape(-1, buffer.observations.shape[-1])
    matched = table.match(obs) >= 0
    flat_stored = stored.reshape(len(obs), -1)
    np.testing.assert_allclose(flat_stored[matched], np.broadcast_to(suggested.reshape(1, -1), (matched.sum(), flat_stored.shape[1])), atol=1e-6)
    assert matched.sum() == stats["overridden"]

    # Stored log-probabilities and values are those of the stored actions under the current policy.
    obs_t = th.as_tensor(obs)
    actions_t = th.as_tensor(buffer.actions.reshape(len(obs), -1))
    if env_id == "CartPole-v1":
        actions_t = actions_t.flatten()
    with th.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(obs_t, actions_t)
    np.testing.assert_allclose(buffer.log_probs.reshape(-1), log_prob.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buffer.values.reshape(-1), values.flatten().numpy(), rtol=1e-5, atol=1e-5)


def test_implicit_reward_shapes_training_reward_only() -> None:
    table = _table("CartPole-v1", np.array(0, dtype=np.int64), radius=0.5, reward=-0.8)
    model, env = _collect("CartPole-v1", table, override=False, shape=True)
    buffer = model.rollout_buffer
    obs = buffer.observations.reshape(-1, buffer.observations.shape[-1])
    matched = table.match(obs) >= 0
    assert matched.any() and not matched.all()
    env_rewards = np.stack(env.env_rewards).reshape(-1)
    beta = model.modulation.beta_absolute  # type: ignore[union-attr]
    expected = env_rewards + np.where(matched, beta * -0.8, 0.0)
    np.testing.assert_allclose(buffer.rewards.reshape(-1), expected, rtol=1e-6)
    # No action was overridden in ULTRA-R.
    assert model.modulation.stats.total["overridden"] == 0
    # The Monitor (true return) saw only the environment's reward: CartPole pays exactly 1 per step.
    assert all(r == 1.0 for r in env_rewards)


def test_match_and_override_rates_are_logged() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    model, _ = _collect("CartPole-v1", table, override=True, shape=True)
    logged = model.logger.name_to_value
    assert 0 < logged["refine/match_rate"] < 1
    assert logged["refine/override_rate"] == pytest.approx(logged["refine/match_rate"])
    # Every matched step executed the suggestion: no own action was rated.
    assert logged["refine/implicit_reward_mean"] == 0.0
    model, _ = _collect("CartPole-v1", table, override=False, shape=True)
    assert model.logger.name_to_value["refine/implicit_reward_mean"] == pytest.approx(0.5)


def test_table_that_never_matches_changes_nothing() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=1e-9)
    table.observations = table.observations + 100.0  # far from anything CartPole visits
    model, env = _collect("CartPole-v1", table, override=True, shape=True)
    assert model.modulation.stats.total["matched"] == 0
    assert model.logger.name_to_value["refine/match_rate"] == 0.0
    np.testing.assert_array_equal(model.rollout_buffer.rewards.reshape(-1), np.stack(env.env_rewards).reshape(-1))


def test_override_probability_and_supervised_weight_anneal_to_zero() -> None:
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    modulation = Modulation(table, True, False, ModulationSettings(override_prob=0.8, bc_weight=2.0))
    assert modulation.override_prob(1.0) == pytest.approx(0.8)
    assert modulation.override_prob(0.25) == pytest.approx(0.2)
    assert modulation.bc_weight(0.5) == pytest.approx(1.0)
    assert modulation.override_prob(-0.01) == 0.0


def test_implicit_reward_is_never_charged_to_an_executed_suggestion() -> None:
    """The LLM rates the agent's own action: with ULTRA-RA and override probability 0.5, matched
    steps where the suggestion ran keep the environment's reward; the others get β·r_LLM."""
    table = _table("CartPole-v1", np.array(0, dtype=np.int64), radius=0.5, reward=-1.0)
    settings = ModulationSettings(override_prob=0.5, anneal_override=False, bc_weight=0.0)
    model, env = _collect("CartPole-v1", table, override=True, shape=True, settings=settings)
    buffer = model.rollout_buffer
    obs = buffer.observations.reshape(-1, buffer.observations.shape[-1])
    matched = table.match(obs) >= 0
    shaping = buffer.rewards.reshape(-1) - np.stack(env.env_rewards).reshape(-1)
    stats = model.modulation.stats.total  # type: ignore[union-attr]
    assert 0 < stats["overridden"] < stats["matched"], "the test needs executed and declined suggestions"
    shaped = shaping < -1e-6
    assert shaped.sum() == stats["matched"] - stats["overridden"]
    assert not (shaped & ~matched).any()
    np.testing.assert_allclose(shaping[shaped], -model.modulation.beta_absolute, rtol=1e-6)  # type: ignore[union-attr]


def test_first_epoch_ratio_is_one_for_overridden_steps() -> None:
    """An independent check of the stored log-probabilities: before any update, PPO's ratio
    exp(log π(a|s) - stored log-prob) is exactly 1 for every step, the overridden ones included."""
    table = _table("Pendulum-v1", np.array([1.7], dtype=np.float32), radius=1.0)
    model, _ = _collect("Pendulum-v1", table, override=True, shape=False)
    for data in model.rollout_buffer.get(batch_size=None):
        with th.no_grad():
            _, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions)
        ratio = th.exp(log_prob - data.old_log_prob)
        np.testing.assert_allclose(ratio.numpy(), 1.0, rtol=0, atol=1e-5)


def test_suggestion_at_the_bound_does_not_pull_a_mean_beyond_it_inwards() -> None:
    """The supervised term regresses the *executed* (clipped) mean on the suggestion: a mean
    already beyond a bound that the suggestion sits on gets no gradient; one inside does."""
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    table = _table("Pendulum-v1", np.array([2.0], dtype=np.float32), radius=1.0)
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu",
                      modulation=Modulation(table, True, False))
    obs = th.zeros((4, 3))
    bias = model.policy.action_net.bias
    for mean_bias, expect_gradient in ((5.0, False), (0.0, True)):
        with th.no_grad():
            bias.fill_(mean_bias)
            model.policy.action_net.weight.zero_()
        model.policy.zero_grad()
        model._imitation_loss(obs, th.full((4, 1), 2.0)).backward()
        assert (abs(float(bias.grad.sum())) > 0) == expect_gradient  # type: ignore[union-attr]


def test_supervised_term_moves_the_policy_to_the_suggestion() -> None:
    """With only the supervised term (no override, no shaping weight), the policy's action at the
    table's state moves towards the suggestion; with bc_weight 0 it does not move there."""
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    gaps = {}
    for weight in (0.0, 1.0):
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        settings = ModulationSettings(override_prob=0.0, beta=0.0, bc_weight=weight, bc_anneal=False)
        model = GuidedPPO("MlpPolicy", env, n_steps=128, batch_size=64, seed=0, device="cpu",
                          modulation=Modulation(table, True, True, settings))
        model.set_logger(Logger(None, []))
        obs = th.as_tensor(table.observations, dtype=th.float32)
        before = model.policy.get_distribution(obs).distribution.probs[0, 1].item()  # type: ignore[union-attr]
        model.learn(1024)
        after = model.policy.get_distribution(obs).distribution.probs[0, 1].item()  # type: ignore[union-attr]
        gaps[weight] = after - before
    assert gaps[1.0] > 0.15, gaps
    assert gaps[1.0] > gaps[0.0] + 0.15, gaps


def test_truncated_episode_bootstraps_with_shaping_added_once() -> None:
    """At a time-limit truncation the training reward is r_env + β·r_LLM (if matched) + γ·V(s_T),
    with V(s_T) of the terminal observation, not of the next episode's first."""
    from gymnasium.wrappers import TimeLimit

    from ultrarl.envs.factory import make_env
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = DummyVecEnv([lambda: Monitor(TimeLimit(make_env("Pendulum-v1").unwrapped, max_episode_steps=10))])
    env.seed(0)
    table = _table("Pendulum-v1", np.array([0.0], dtype=np.float32), radius=1e3, reward=0.5)  # matches everything
    settings = ModulationSettings(override_prob=0.0, anneal_override=False, beta=1.0, bc_weight=0.0)
    model = GuidedPPO("MlpPolicy", env, n_steps=10, batch_size=10, seed=0, device="cpu",
                      modulation=Modulation(table, False, True, settings))
    model.set_logger(Logger(None, []))
    recorder = RecordingVecEnv(env)
    model.set_env(recorder)
    _, callback = model._setup_learn(10, callback=None)
    captured = {}
    original = recorder.step_wait

    def step_wait():  # type: ignore[no-untyped-def]
        out = original()
        if out[2][0]:
            captured["terminal"] = out[3][0]["terminal_observation"]
        return out

    recorder.step_wait = step_wait  # type: ignore[method-assign]
    assert model.collect_rollouts(recorder, callback, model.rollout_buffer, n_rollout_steps=10)
    with th.no_grad():
        terminal_value = model.policy.predict_values(model.policy.obs_to_tensor(captured["terminal"])[0]).item()
    env_reward = float(recorder.env_rewards[-1][0])
    expected = env_reward + model.modulation.beta_absolute * 0.5 + model.gamma * terminal_value  # type: ignore[union-attr]
    assert model.rollout_buffer.rewards[-1, 0] == pytest.approx(expected, rel=1e-5)


def test_guided_segment_keeps_the_advisor_in_control_until_it_ends_or_the_episode_does() -> None:
    """A table entry's plan of 4 steps: after an override at a matched state the next 3 steps are
    overridden too, far from any table entry; the end of the episode ends the segment."""
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.1)
    table.plans, table.plan_lengths = np.ones((1, 4), dtype=np.int64), np.array([4])
    settings = ModulationSettings(override_prob=1.0, anneal_override=False, bc_weight=0.0)
    modulation = Modulation(table, override_actions=True, shape_rewards=False, settings=settings)
    space = make_vec_env("CartPole-v1", n_envs=1, seed=0).action_space
    near, far = table.observations[0], table.observations[0] + 50.0
    obs = np.stack([near, far])  # env 0 starts at the table's state, env 1 never comes near it
    own = np.zeros(2, dtype=np.int64)
    overrides = []
    for step in range(6):
        advice = modulation.advise(obs if step == 0 else np.stack([far, far]), own, space, 1.0)
        overrides.append(advice.override.tolist())
        np.testing.assert_array_equal(advice.suggested, np.ones(int(advice.matched.sum())))
    assert overrides == [[True, False]] * 4 + [[False, False]] * 2
    # A new segment, cut by the end of its episode after one held step.
    modulation.advise(obs, own, space, 1.0)
    modulation.advise(np.stack([far, far]), own, space, 1.0)
    modulation.end_episodes(np.array([True, False]))
    assert not modulation.advise(np.stack([far, far]), own, space, 1.0).override.any()


def test_guided_segment_asks_a_live_advisor_at_every_held_state() -> None:
    table = _table("Pendulum-v1", np.array([1.0], dtype=np.float32), radius=0.1)
    asked: list[np.ndarray] = []

    def advisor(observations: np.ndarray) -> np.ndarray:
        asked.append(observations.copy())
        return -observations[:, :1].astype(np.float32)  # depends on the state

    settings = ModulationSettings(override_prob=1.0, anneal_override=False, bc_weight=0.0, hold_steps=2)
    modulation = Modulation(table, True, False, settings, advisor=advisor)
    space = make_vec_env("Pendulum-v1", n_envs=1, seed=0).action_space
    states = [table.observations[:1], table.observations[:1] + 5.0, table.observations[:1] + 7.0]
    suggestions = [modulation.advise(s, np.zeros((1, 1), np.float32), space, 1.0).suggested for s in states]
    assert len(asked) == 3
    np.testing.assert_allclose(np.concatenate(suggestions)[:, 0], [-s[0, 0] for s in states], rtol=1e-6)


def test_guided_segments_default_to_the_methods_choice_unless_set() -> None:
    from ultrarl.settings import RefineSettings

    common = {"env_id": "MountainCarContinuous-v0", "agent": "a.zip"}
    assert RefineSettings(method="oracle", expert="e.zip", **common).effective_modulation.hold_steps == 128
    assert RefineSettings(method="ultra-ra", **common).effective_modulation.hold_steps == 0
    explicit = RefineSettings(method="oracle", expert="e.zip", modulation={"hold_steps": 0}, **common)
    assert explicit.effective_modulation.hold_steps == 0


def test_supervised_phase_without_gradient_moves_nothing() -> None:
    """Suggestions the policy already meets (its clipped mean sits on the bound they name) give
    the imitation loss no gradient: the supervised phase then changes no weight and leaves PPO's
    optimiser as it was. With PPO's optimiser shared, Adam's momentum from the PPO update moved
    the policy on every supervised step."""
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    table = _table("Pendulum-v1", np.array([2.0], dtype=np.float32), radius=1e-9)
    table.observations = table.observations + 100.0  # never matched: only the supervised term acts
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
                      modulation=Modulation(table, True, False, ModulationSettings(bc_weight=0.0)))
    model.set_logger(Logger(None, []))
    model.learn(64)  # one PPO update: Adam now has momentum
    with th.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.fill_(5.0)  # mean 5, beyond the bound 2 the suggestions name
    # As many advised states as the rollout holds: the phase takes the update's full step count.
    model.supervised.memory.add(np.zeros((64, 3), dtype=np.float32), np.full((64, 1), 2.0, dtype=np.float32))
    params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    ppo_optimizer = {k: v.clone() for k, v in model.policy.optimizer.state_dict()["state"][0].items()}
    loss = model._supervised_phase(1.0)
    assert loss == 0.0
    stepped = model.supervised.optimizer.state_dict()["state"]  # the parameters the phase stepped
    assert stepped and {int(state["step"]) for state in stepped.values()} == {4}
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, params[key]), key
    for key, value in model.policy.optimizer.state_dict()["state"][0].items():
        assert th.equal(value, ppo_optimizer[key]), key


@pytest.mark.parametrize("time_limit", [None, 8], ids=["episodes-end", "time-limit-truncations"])
def test_guided_ppo_whose_advice_never_applies_trains_exactly_as_ppo(time_limit: int | None) -> None:
    """ULTRA with a table that never matches (and no supervised term at the table's own states)
    is continued PPO, weight for weight: the rollout loop, the buffer and the updates are SB3's,
    down to the float32 arithmetic of the bootstrap at a time-limit truncation."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=1e-9)
    table.observations = table.observations + 100.0
    weights = []
    for guided in (False, True):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0, wrapper=None if time_limit is None else (
            lambda env, rank: gym.wrappers.TimeLimit(env, time_limit)))
        kwargs = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
        if guided:
            modulation = Modulation(table, True, True, ModulationSettings(bc_weight=0.0))
            model = GuidedPPO("MlpPolicy", env, modulation=modulation, **kwargs)
        else:
            model = PPO("MlpPolicy", env, **kwargs)
        model.set_logger(Logger(None, []))
        model.learn(3 * 128)
        weights.append(model.policy.state_dict())
    for key, value in weights[0].items():
        assert th.equal(value, weights[1][key]), key


def test_supervised_steps_scale_with_the_advised_states() -> None:
    """The update's step count scaled by the advised states' share of its samples: 20 states
    after an update of 320 steps over 2048 samples get 3.125 steps on average (3 or 4), a memory
    at least the rollout's size the update's 320, and an empty one none."""

    def term(size: int) -> SupervisedTerm:
        supervised = SupervisedTerm([th.nn.Parameter(th.zeros(1))], th.optim.Adam, {}, 5000, (3,), (), seed=0)
        supervised.memory.add(np.zeros((size, 3), dtype=np.float32), np.zeros(size, dtype=np.float32))
        return supervised

    few, twin = term(20), term(20)
    global_stream = np.random.get_state()[1].copy()
    counts = [few.steps_after(320, 2048) for _ in range(2000)]
    assert set(counts) == {3, 4}
    assert np.mean(counts) == pytest.approx(3.125, abs=0.05)
    assert counts == [twin.steps_after(320, 2048) for _ in range(2000)]  # the term's own seeded stream
    np.testing.assert_array_equal(np.random.get_state()[1], global_stream)
    assert term(2048).steps_after(320, 2048) == 320
    assert term(5000).steps_after(320, 2048) == 320
    assert term(0).steps_after(320, 2048) == 0


def test_a_small_table_gets_a_small_supervised_phase() -> None:
    """A one-entry table that never matches leaves one advised state: over ten updates of 20
    minibatch steps each (64 samples), the supervised term takes 10 x 20/64 steps in
    expectation, not the updates' 200."""
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=1e-9)
    table.observations = table.observations + 100.0
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    settings = ModulationSettings(bc_weight=1.0, bc_anneal=False)
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=10, seed=0, device="cpu",
                      modulation=Modulation(table, True, True, settings))
    model.set_logger(Logger(None, []))
    model.learn(10 * 64)
    assert model.supervised.memory.size == 1
    optimizer_state = model.supervised.optimizer.state_dict()["state"]
    steps = int(optimizer_state[0]["step"]) if optimizer_state else 0
    assert 0 < steps <= 10


def test_ultra_r_learns_from_the_ratings_alone() -> None:
    """ULTRA-R never executes a suggestion, so the supervised term, which teaches suggestions,
    stays off whatever ``bc_weight`` says: it trains weight for weight as with ``bc_weight`` 0.
    Before, it imitated the LLM's suggestions as ULTRA-RA does."""
    table = _table("CartPole-v1", np.array(1, dtype=np.int64), radius=0.5)
    weights = []
    for bc_weight in (0.0, 1.0):
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        modulation = Modulation(table, override_actions=False, shape_rewards=True,
                                settings=ModulationSettings(bc_weight=bc_weight, bc_anneal=False))
        assert not modulation.imitates and modulation.bc_weight(1.0) == 0.0
        model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu",
                          modulation=modulation)
        model.set_logger(Logger(None, []))
        model.learn(3 * 64)
        assert model.modulation.stats.total["matched"] > 0
        assert model.supervised.memory.size == 0
        weights.append(model.policy.state_dict())
    for key, value in weights[0].items():
        assert th.equal(value, weights[1][key]), key
