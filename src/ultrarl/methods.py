"""The method registry: what each method is, in one declarative entry.

Every other module asks this registry (identification, refinement, the bench, the reports);
none compares method names. Adding a method is one entry here plus, if it identifies critical
states in a new way, one function in ``ultrarl.explain.identify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ultrarl.errors import UltraRLError

# How a method finds critical states: none, an LLM, the StateMask/RICE mask network, uniformly
# random steps, or an expert policy (the oracle).
Identifier = Literal["none", "llm", "mask", "random", "expert"]


@dataclass(frozen=True)
class Method:
    """One method.

    :param name: the ``--method`` value
    :param label: its name in tables
    :param identify: how it finds critical states
    :param refines: False for the agent as is (``none``, a bench row only)
    :param override_actions: executes suggestions at matched states (ULTRA-A)
    :param shape_rewards: adds the implicit reward where the agent's own action ran (ULTRA-R)
    :param reset_prob: default probability that an episode starts at a critical state
    :param rnd_weight: default weight λ of the RND exploration bonus
    :param upper_bound: an expert advisor, not a competitor: labelled so in every table
    """

    name: str
    label: str
    identify: Identifier
    refines: bool = True
    override_actions: bool = False
    shape_rewards: bool = False
    reset_prob: float = 0.0
    rnd_weight: float = 0.0
    hold_steps: int = 0  # guided segments (modulation.hold_steps when unset)
    upper_bound: bool = False

    @property
    def guided(self) -> bool:
        """Modulates rollouts with a guidance table."""
        return self.override_actions or self.shape_rewards

    @property
    def asks_llm(self) -> bool:
        return self.identify == "llm"

    @property
    def suggests(self) -> bool:
        """Its critical states carry a suggested action (an LLM's or the expert's)."""
        return self.identify in ("llm", "expert")


_ENTRIES = (
    Method("none", "none (agent as is)", "none", refines=False),
    Method("ppo", "ppo (continued training)", "none"),
    Method("ultra-a", "ULTRA-A", "llm", override_actions=True),
    Method("ultra-r", "ULTRA-R", "llm", shape_rewards=True),
    Method("ultra-ra", "ULTRA-RA", "llm", override_actions=True, shape_rewards=True),
    # StateMask-R: every episode starts at a critical state of the mask network.
    Method("statemask-r", "StateMask-R", "mask", reset_prob=1.0),
    # RICE: p is the probability of a critical start (the paper's meaning; its code inverts it).
    Method("rice", "RICE", "mask", reset_prob=0.25, rnd_weight=0.01),
    Method("random", "random explanation (RICE machinery)", "random", reset_prob=0.25, rnd_weight=0.01),
    # Guided segments of 128 steps: chosen on MountainCar's tuning seeds (benchmarks/stuck-mcc-tuning.yaml),
    # where they helped the live expert and hurt the embedded LLM's table (BENCHMARKS.md).
    Method("oracle", "oracle (expert advisor; upper bound, not an LLM)", "expert", override_actions=True,
           shape_rewards=True, hold_steps=128, upper_bound=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
REFINE_METHODS: tuple[str, ...] = tuple(m.name for m in _ENTRIES if m.refines)


def get_method(name: str, refining: bool = True) -> Method:
    """The registry entry for ``name``, or a one-line error listing the choices."""
    choices = REFINE_METHODS if refining else tuple(METHODS)
    if name not in choices:
        raise UltraRLError(f"unknown method '{name}'; choose one of: {', '.join(choices)}")
    return METHODS[name]
