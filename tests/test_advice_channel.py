"""ULTRA's advice channel: plans that last, a supervised term that weights, an implicit reward of
the action taken now, trust that advice earns, and each method's defaults from the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger

from ultrarl.envs.factory import make_env, make_vec_env
from ultrarl.envs.rollout import collect_trajectories
from ultrarl.envs.snapshot import take_snapshot
from ultrarl.errors import UltraRLError
from ultrarl.explain.baselines import corrupt_advice, random_advice, random_advice_states
from ultrarl.explain.oracle import expert_plans, oracle_critical_states
from ultrarl.explain.validation import validate_answer
from ultrarl.guidance.table import GuidanceSettings, GuidanceTable
from ultrarl.interpret.describer import StateDescriber
from ultrarl.refine.exploration import CriticalStateResets, RNDBonus
from ultrarl.refine.guided_ppo import GuidedPPO
from ultrarl.refine.modulation import Modulation, ModulationSettings
from ultrarl.refine.refiner import Refiner, load_checked_agent
from ultrarl.refine.supervised import segment_returns
from ultrarl.stages import reset_pool

AGENTS = Path(__file__).resolve().parent.parent / "benchmarks" / "agents"
MCC = "MountainCarContinuous-v0"
MCC_AGENT = AGENTS / MCC / "seed100.zip"  # a tuning agent, stuck at the valley floor
MCC_EXPERT = AGENTS / "experts" / f"{MCC}.zip"


def _pendulum_table(suggested: float, rated: float, rating: float, plan: list[float] | None = None) -> GuidanceTable:
    plan = plan or []
    actions = np.asarray([[suggested], *[[a] for a in plan]], dtype=np.float32)
    return GuidanceTable(
        observations=np.zeros((1, 3)), suggested_actions=np.asarray([[suggested]], dtype=np.float32),
        implicit_rewards=np.asarray([rating]), sources=np.zeros((1, 2), dtype=np.int64), obs_mean=np.zeros(3),
        obs_std=np.ones(3), epsilon=1e9, reward_scale=1.0, rated_actions=np.asarray([[rated]], dtype=np.float32),
        plans=actions[None], plan_lengths=np.asarray([len(actions)]),
    )


def _pendulum_model(table: GuidanceTable, settings: ModulationSettings | None = None) -> GuidedPPO:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = GuidedPPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu",
                      modulation=Modulation(table, True, True, settings))
    model.set_logger(Logger(None, []))
    return model


def test_supervised_step_scales_with_its_weight() -> None:
    """Adam's step does not follow its loss's scale: the weight must scale the step itself."""
    moved = {}
    for weight in (0.25, 1.0):
        model = _pendulum_model(_pendulum_table(1.5, 0.0, 0.0), ModulationSettings(bc_weight=weight, bc_anneal=False))
        model.supervised.memory.add(np.zeros((64, 3), dtype=np.float32), np.full((64, 1), 1.5, dtype=np.float32))
        before = model.policy.action_net.bias.detach().clone()
        model._supervised_phase(model.modulation.bc_weight(1.0))  # type: ignore[union-attr]
        moved[weight] = float((model.policy.action_net.bias.detach() - before).abs().sum())
    assert moved[1.0] > 0
    assert moved[0.25] / moved[1.0] == pytest.approx(0.25, rel=0.05)


def test_a_saturated_mean_is_pulled_back_towards_a_suggestion_inside_the_bounds() -> None:
    model = _pendulum_model(_pendulum_table(1.0, 0.0, 0.0))
    with th.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.fill_(5.0)  # mean 5, beyond the bound 2
    model.policy.zero_grad()
    model._imitation_loss(th.zeros((4, 3)), th.full((4, 1), 1.0)).backward()
    assert float(model.policy.action_net.bias.grad.sum()) > 0  # type: ignore[union-attr]  # descent lowers the mean


def test_the_implicit_reward_rates_the_action_taken_now() -> None:
    """Rated action 0.0 rated -1, suggestion 2.0 (rated +1 implicitly): actions between them are
    rated by their distance to the suggestion."""
    table = _pendulum_table(2.0, 0.0, -1.0)
    space = make_env("Pendulum-v1").action_space
    ratings = table.rate(np.zeros(3, dtype=np.int64), np.asarray([[2.0], [1.0], [0.0]]), space)
    np.testing.assert_allclose(ratings, [1.0, 0.0, -1.0])
    modulation = Modulation(table, override_actions=False, shape_rewards=True)
    implicit = [modulation.advise(np.zeros((1, 3)), np.asarray([[a]]), space, 1.0).implicit[0] for a in (2.0, 0.0)]
    assert implicit == [1.0, -1.0]


def test_a_plan_is_executed_step_by_step_once_started() -> None:
    table = _pendulum_table(1.0, 0.0, 0.0, plan=[-1.0, -2.0])
    modulation = Modulation(table, True, False, ModulationSettings(override_prob=1.0, anneal_override=False))
    space = make_env("Pendulum-v1").action_space
    far = np.full((1, 3), 1e12)  # matches nothing: only the plan, once started, acts
    steps = [modulation.advise(obs, np.zeros((1, 1)), space, 1.0) for obs in (np.zeros((1, 3)), far, far, far)]
    assert [bool(s.override[0]) for s in steps] == [True, True, True, False]
    assert [float(s.suggested[0, 0]) for s in steps[:3]] == [1.0, -1.0, -2.0]
    assert [bool(s.starts[0]) for s in steps] == [True, False, False, False]


def test_segment_returns_run_to_each_plans_end() -> None:
    # One env, five steps: a plan over steps 0-2, the agent's own step 3, a plan at step 4 cut by the rollout.
    rewards = np.asarray([[1.0], [2.0], [4.0], [8.0], [16.0]])
    next_values = np.asarray([[10.0], [20.0], [30.0], [40.0], [50.0]])
    executed = np.asarray([[True], [True], [True], [False], [True]])
    starts = np.asarray([[True], [False], [False], [False], [True]])
    ended = np.zeros((5, 1), dtype=bool)
    returns = segment_returns(rewards, next_values, ended, executed, starts, gamma=0.5)
    np.testing.assert_allclose(returns[:, 0], [1 + 0.5 * (2 + 0.5 * (4 + 0.5 * 30)), 2 + 0.5 * (4 + 0.5 * 30),
                                               4 + 0.5 * 30, 0.0, 16 + 0.5 * 50])
    ended[1] = True  # the episode ends after step 1: no bootstrap, and the plan ends there
    returns = segment_returns(rewards, next_values, ended, executed, starts, gamma=0.5)
    assert returns[0, 0] == pytest.approx(1 + 0.5 * 2) and returns[1, 0] == pytest.approx(2.0)


def test_plans_in_answers_are_expanded_cut_and_ended_at_a_bad_segment() -> None:
    space = make_env("Pendulum-v1").action_space
    item = {"step": 3, "rationale": "swing", "suggested_action": [1.0], "implicit_reward": 0.0,
            "plan": [{"action": [-1.0], "steps": 2}, {"action": [5.0], "steps": 9}, {"action": "x", "steps": 1}]}
    answer = validate_answer({"critical_steps": [item]}, 10, space, ("torque",), k=3, plan_steps=6)
    advice = answer.advice[0]
    assert advice.plan == ([-1.0], [-1.0], [2.0], [2.0], [2.0])  # 6 steps with the suggestion, clipped to 2
    assert answer.clipped == 1
    no_plan = validate_answer({"critical_steps": [{**item, "plan": None}]}, 10, space, ("torque",), k=3, plan_steps=6)
    assert no_plan.advice[0].plan == () and no_plan.clipped == 0
    broken = validate_answer({"critical_steps": [{**item, "plan": [{"action": [0.5]}]}]}, 10, space, ("torque",), 3, 6)
    assert broken.advice[0].plan == () and broken.clipped == 1


def test_random_advice_is_uniform_and_fits_the_plan_length() -> None:
    space = make_env(MCC).action_space
    rng = np.random.default_rng(0)
    advice = [random_advice(space, 16, rng) for _ in range(400)]
    assert all(1 + len(plan) <= 16 for _, plan, _ in advice)
    first = np.asarray([a[0][0] for a in advice])
    ratings = np.asarray([a[2] for a in advice])
    assert first.min() < -0.9 and first.max() > 0.9 and abs(first.mean()) < 0.15
    assert ratings.min() < -0.9 and ratings.max() > 0.9


def _mcc_identification(plan_steps: int = 128):
    agent = load_checked_agent(MCC_AGENT, MCC)
    expert = load_checked_agent(MCC_EXPERT, MCC)
    trajectories = collect_trajectories(agent, MCC, 2, seed=0, keep_snapshots=True)
    describer = StateDescriber(MCC, agent.observation_space, agent.action_space)
    states = oracle_critical_states(expert, agent, trajectories, describer, 3)
    return agent, trajectories, describer, expert_plans(expert, MCC, states, trajectories, plan_steps)


def test_random_advice_and_corruption_keep_the_states() -> None:
    _, trajectories, describer, states = _mcc_identification(plan_steps=8)
    randoms = random_advice_states(trajectories, describer, 3, seed=0, plan_steps=8)
    assert len(randoms) == 6 and all(len(s.plan) <= 7 for s in randoms)
    corrupted = corrupt_advice(states, describer.action_space, 1.0, 8, seed=0)
    assert [(s.episode, s.step) for s in corrupted] == [(s.episode, s.step) for s in states]
    assert [s.suggested_action for s in corrupted] != [s.suggested_action for s in states]
    assert corrupt_advice(states, describer.action_space, 0.0, 8, seed=0) == states


def test_the_offline_expert_plans_from_the_critical_state() -> None:
    """Its plan is what the expert does from the state's snapshot: replayed open-loop from that
    state, it reaches the flag (MountainCar is deterministic)."""
    _, trajectories, _, states = _mcc_identification()
    assert states and all(len(s.plan) >= 1 for s in states)
    env = make_env(MCC, seed=0)
    from ultrarl.envs.snapshot import restore_snapshot

    by_episode = {t.episode: t for t in trajectories}
    state = states[0]
    restore_snapshot(env, by_episode[state.episode].snapshots[state.step])  # type: ignore[index]
    total, terminated = 0.0, False
    for action in [state.suggested_action, *state.plan]:
        _, reward, terminated, _, _ = env.step(np.asarray(action, dtype=np.float32))
        total += float(reward)
    assert terminated and total > 50  # at the flag


def _trust_run(states, trajectories, timesteps: int = 4096) -> dict[str, float]:
    agent = load_checked_agent(MCC_AGENT, MCC)
    table = GuidanceTable.from_explanations(states, trajectories, GuidanceSettings())
    refiner = Refiner(agent, MCC, method="ultra-a", guidance=table, initial_states=reset_pool(states, trajectories),
                      reset_prob=1.0, modulation=ModulationSettings(anneal_override=False), seed=0)
    refiner.refine(timesteps)
    return refiner.modulation_totals


def test_constant_harmful_advice_is_dropped_and_good_advice_is_kept() -> None:
    """Every episode starts at a critical state and executes its advice. The expert's plans reach
    the flag: they beat the stuck agent, are kept and imitated. A constant full push to the left
    (away from the flag) held for 128 steps never does: after trust_trials tries each entry is
    dropped, and nothing is imitated."""
    _, trajectories, _, states = _mcc_identification()
    good = _trust_run(states, trajectories)
    assert good["plans_beat_agent"] > 0 and good["imitated_steps"] > 0 and good["entries_dropped"] == 0
    push = [s.model_copy(update={"suggested_action": [-1.0], "plan": [[-1.0]] * 127}) for s in states]
    bad = _trust_run(push, trajectories)
    assert bad["plans_beat_agent"] == 0 and bad["imitated_steps"] == 0
    assert bad["entries_dropped"] == bad["entries"] - bad["entries_never_executed"] > 0


def test_refiner_from_python_runs_each_method_with_its_defaults(cartpole_agent_path: Path) -> None:
    env = make_env("CartPole-v1", seed=0)
    obs, _ = env.reset(seed=0)
    pool = [take_snapshot(env, obs)]
    rice = Refiner(cartpole_agent_path, "CartPole-v1", method="rice", initial_states=pool)
    assert isinstance(rice.env, RNDBonus) and rice.env.weight == 0.01
    resets = rice.env.venv.envs[0]
    while not isinstance(resets, CriticalStateResets):
        resets = resets.env
    assert resets.reset_prob == 0.25
    table = GuidanceTable(observations=obs[None].astype(np.float64), suggested_actions=np.asarray([1]),
                          implicit_rewards=np.asarray([0.0]), sources=np.zeros((1, 2), dtype=np.int64),
                          obs_mean=np.zeros(4), obs_std=np.ones(4), epsilon=0.1, reward_scale=1.0)
    oracle = Refiner(cartpole_agent_path, "CartPole-v1", method="oracle", guidance=table,
                     advisor=lambda o: np.ones(len(o)))
    assert oracle.modulation is not None and oracle.modulation.settings.hold_steps == 128
    assert not oracle.modulation.trusts
    ultra = Refiner(cartpole_agent_path, "CartPole-v1", method="ultra-ra", guidance=table, initial_states=pool)
    assert ultra.modulation is not None and ultra.modulation.trusts and ultra.reset_pool_size == 1
    with pytest.raises(UltraRLError, match="initial_states"):
        Refiner(cartpole_agent_path, "CartPole-v1", method="ultra-ra", guidance=table)
    plain = Refiner(cartpole_agent_path, "CartPole-v1", method="ultra-ra", guidance=table, reset_prob=0.0)
    assert plain.reset_pool_size == 0
