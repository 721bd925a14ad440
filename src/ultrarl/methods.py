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
# random steps, an expert policy (the oracles), or uniformly random steps with uniformly random
# advice (the lower bound of advice).
Identifier = Literal["none", "llm", "mask", "random", "expert", "random-advice"]


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
    :param hold_steps: default length of a live advisor's guided segments (0: off)
    :param trust_advice: default of the safeguard: imitate executed advice only where it beat the
        agent's own expected return, and stop executing advice that never did
    :param live_advisor: the expert is asked at visited states during refinement (the live oracle);
        every other method reads only its table, filled once at identification
    :param upper_bound: an expert advisor, not a competitor: labelled so in every table
    :param lower_bound: advice worth nothing (uniformly random), labelled so in every table
    """

    name: str
    label: str
    identify: Identifier
    refines: bool = True
    override_actions: bool = False
    shape_rewards: bool = False
    reset_prob: float = 0.0
    rnd_weight: float = 0.0
    hold_steps: int = 0
    trust_advice: bool = False
    live_advisor: bool = False
    upper_bound: bool = False
    lower_bound: bool = False

    @property
    def guided(self) -> bool:
        """Modulates rollouts with a guidance table."""
        return self.override_actions or self.shape_rewards

    @property
    def plays_expert_plans(self) -> bool:
        """The expert answers once, with plans played from snapshots (the offline oracle)."""
        return self.identify == "expert" and not self.live_advisor

    @property
    def asks_llm(self) -> bool:
        return self.identify == "llm"

    @property
    def suggests(self) -> bool:
        """Its critical states carry a suggested action (an LLM's, the expert's or a random one)."""
        return self.identify in ("llm", "expert", "random-advice")


_ENTRIES = (
    Method("none", "none (agent as is)", "none", refines=False),
    Method("ppo", "ppo (continued training)", "none"),
    # ULTRA and every advisor read through the same channel: plans executed from matched states
    # and from critical-state starts (reset p), imitated only where they beat the agent (trust).
    Method("ultra-a", "ULTRA-A", "llm", override_actions=True, reset_prob=0.25, trust_advice=True),
    Method("ultra-r", "ULTRA-R", "llm", shape_rewards=True, reset_prob=0.25, trust_advice=True),
    Method("ultra-ra", "ULTRA-RA", "llm", override_actions=True, shape_rewards=True, reset_prob=0.25,
           trust_advice=True),
    # StateMask-R: every episode starts at a critical state of the mask network.
    Method("statemask-r", "StateMask-R", "mask", reset_prob=1.0),
    # RICE: p is the probability of a critical start (the paper's meaning; its code inverts it).
    Method("rice", "RICE", "mask", reset_prob=0.25, rnd_weight=0.01),
    Method("random", "random explanation (RICE machinery)", "random", reset_prob=0.25, rnd_weight=0.01),
    # Guided segments of 128 steps: chosen on MountainCar's tuning seeds (benchmarks/stuck-mcc-tuning.yaml),
    # where they helped the live expert and hurt the embedded LLM's table (BENCHMARKS.md).
    Method("oracle", "oracle (live expert asked at every visited state; upper bound of the machinery)", "expert",
           override_actions=True, shape_rewards=True, hold_steps=128, live_advisor=True, upper_bound=True),
    # The expert in the LLM's place: asked once, at identification, as ULTRA-RA asks its LLM, and
    # read through ULTRA-RA's channel: the upper bound of what ULTRA's channel makes of advice.
    Method("oracle-offline", "oracle-offline (expert asked once, as an LLM is; upper bound of ULTRA's channel)",
           "expert", override_actions=True, shape_rewards=True, reset_prob=0.25, trust_advice=True,
           upper_bound=True),
    Method("random-advice", "random-advice (uniformly random advice through ULTRA-RA's channel; lower bound)",
           "random-advice", override_actions=True, shape_rewards=True, reset_prob=0.25, trust_advice=True,
           lower_bound=True),
)
METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
REFINE_METHODS: tuple[str, ...] = tuple(m.name for m in _ENTRIES if m.refines)


def get_method(name: str, refining: bool = True) -> Method:
    """The registry entry for ``name``, or a one-line error listing the choices."""
    choices = REFINE_METHODS if refining else tuple(METHODS)
    if name not in choices:
        raise UltraRLError(f"unknown method '{name}'; choose one of: {', '.join(choices)}")
    return METHODS[name]
