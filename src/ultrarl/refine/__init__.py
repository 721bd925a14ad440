"""Stage 6, refinement: PPO with ULTRA's policy modulation (variants A, R and RA)."""

from ultrarl.refine.guided_ppo import GuidedPPO, Modulation
from ultrarl.refine.refiner import METHODS, ModulationConfig, Refiner, check_method, load_agent

__all__ = ["METHODS", "GuidedPPO", "Modulation", "ModulationConfig", "Refiner", "check_method", "load_agent"]
