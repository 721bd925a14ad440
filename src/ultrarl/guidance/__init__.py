"""Stage 5, guidance: the table of critical states the refinement matches against."""

from ultrarl.guidance.table import GuidanceTable, calibrate_epsilon

__all__ = ["GuidanceTable", "calibrate_epsilon"]
