"""ultrarl: break an RL agent's training bottleneck with LLM guidance (the ULTRA method)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
