"""Stage 6, refinement: PPO with ULTRA's policy modulation (variants A, R and RA)."""

from ultrarl.refine.guided_ppo import GuidedPPO
from ultrarl.refine.modulation import Modulation, ModulationSettings
from ultrarl.refine.refiner import Refiner, load_agent, load_checked_agent

__all__ = ["GuidedPPO", "Modulation", "ModulationSettings", "Refiner", "load_agent", "load_checked_agent"]
