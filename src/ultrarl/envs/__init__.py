"""Stage 1, environments: creation, validation against an agent, sparse variants, rollouts."""

from ultrarl.envs.factory import check_agent_spaces, make_env, make_vec_env, validate_env_id
from ultrarl.envs.rollout import Trajectory, collect_trajectories, load_trajectories, save_trajectories

__all__ = [
    "Trajectory",
    "check_agent_spaces",
    "collect_trajectories",
    "load_trajectories",
    "make_env",
    "make_vec_env",
    "save_trajectories",
    "validate_env_id",
]
