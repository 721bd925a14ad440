"""Stage 5, guidance: the table of critical states the refinement matches against."""

from ultrarl.guidance.table import GuidanceSettings, GuidanceTable, calibrate_epsilon

__all__ = ["GuidanceSettings", "GuidanceTable", "calibrate_epsilon"]
