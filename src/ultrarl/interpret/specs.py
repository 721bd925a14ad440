"""What each observation dimension and action means, per environment family.

Each spec names every quantity with its unit, and every actuator (continuous) or action
(discrete), in the Gymnasium 1.x observation layouts. The prose context (goal, reward,
termination) lives beside this file in ``contexts/<family>.md`` so a person can read and edit it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str  # "" for unitless quantities (cosines, counts)


@dataclass(frozen=True)
class EnvSpec:
    family: str  # names the context file: contexts/<family>.md
    observation: tuple[Quantity, ...]
    action_names: tuple[str, ...]  # actuators (continuous) or discrete actions, in index order
    action_unit: str = ""  # unit of a continuous action component, e.g. "N·m (normalised)"


def _q(*pairs: tuple[str, str]) -> tuple[Quantity, ...]:
    return tuple(Quantity(name, unit) for name, unit in pairs)


_HOPPER = EnvSpec(
    family="hopper",
    observation=_q(
        ("torso height", "m"),
        ("torso pitch", "rad"),
        ("thigh angle", "rad"),
        ("leg angle", "rad"),
        ("foot angle", "rad"),
        ("forward velocity", "m/s"),
        ("vertical velocity", "m/s"),
        ("torso pitch rate", "rad/s"),
        ("thigh angular velocity", "rad/s"),
        ("leg angular velocity", "rad/s"),
        ("foot angular velocity", "rad/s"),
    ),
    action_names=("thigh", "leg", "foot"),
    action_unit="torque in [-1, 1]",
)

_WALKER_JOINTS = ("right thigh", "right leg", "right foot", "left thigh", "left leg", "left foot")
_WALKER2D = EnvSpec(
    family="walker2d",
    observation=_q(
        ("torso height", "m"),
        ("torso pitch", "rad"),
        *((f"{j} angle", "rad") for j in _WALKER_JOINTS),
        ("forward velocity", "m/s"),
        ("vertical velocity", "m/s"),
        ("torso pitch rate", "rad/s"),
        *((f"{j} angular velocity", "rad/s") for j in _WALKER_JOINTS),
    ),
    action_names=_WALKER_JOINTS,
    action_unit="torque in [-1, 1]",
)

_CHEETAH_JOINTS = ("back thigh", "back shin", "back foot", "front thigh", "front shin", "front foot")
_HALFCHEETAH = EnvSpec(
    family="halfcheetah",
    observation=_q(
        ("body height", "m"),
        ("body pitch", "rad"),
        *((f"{j} angle", "rad") for j in _CHEETAH_JOINTS),
        ("forward velocity", "m/s"),
        ("vertical velocity", "m/s"),
        ("body pitch rate", "rad/s"),
        *((f"{j} angular velocity", "rad/s") for j in _CHEETAH_JOINTS),
    ),
    action_names=_CHEETAH_JOINTS,
    action_unit="torque in [-1, 1]",
)

_CARTPOLE = EnvSpec(
    family="cartpole",
    observation=_q(
        ("cart position", "m"), ("cart velocity", "m/s"), ("pole angle", "rad"), ("pole angular velocity", "rad/s")
    ),
    action_names=("push cart left", "push cart right"),
)

_MOUNTAINCAR = EnvSpec(
    family="mountaincar",
    observation=_q(("car position", "m"), ("car velocity", "m/s")),
    action_names=("accelerate left", "do not accelerate", "accelerate right"),
)

_MOUNTAINCAR_CONTINUOUS = EnvSpec(
    family="mountaincarcontinuous",
    observation=_q(("car position", "m"), ("car velocity", "m/s")),
    action_names=("engine force",),
    action_unit="force in [-1, 1]",
)

_ACROBOT = EnvSpec(
    family="acrobot",
    observation=_q(
        ("cos of link-1 angle", ""),
        ("sin of link-1 angle", ""),
        ("cos of link-2 angle", ""),
        ("sin of link-2 angle", ""),
        ("link-1 angular velocity", "rad/s"),
        ("link-2 angular velocity", "rad/s"),
    ),
    action_names=("torque -1 on the joint", "no torque", "torque +1 on the joint"),
)

_PENDULUM = EnvSpec(
    family="pendulum",
    observation=_q(("cos of angle from upright", ""), ("sin of angle from upright", ""), ("angular velocity", "rad/s")),
    action_names=("torque",),
    action_unit="N·m in [-2, 2]",
)

# Keyed by the id's name without namespace and version: "ultrarl/SparseHopper-v5" -> "SparseHopper".
_SPECS: dict[str, EnvSpec] = {
    "Hopper": _HOPPER,
    "Walker2d": _WALKER2D,
    "HalfCheetah": _HALFCHEETAH,
    "CartPole": _CARTPOLE,
    "MountainCar": _MOUNTAINCAR,
    "MountainCarContinuous": _MOUNTAINCAR_CONTINUOUS,
    "Acrobot": _ACROBOT,
    "Pendulum": _PENDULUM,
}

# Sparse variants share the dense layout but have a context of their own.
_SPARSE_FAMILIES = {"SparseHopper": "Hopper", "SparseWalker2d": "Walker2d", "SparseHalfCheetah": "HalfCheetah"}


def env_base_name(env_id: str) -> str:
    """'ultrarl/SparseHopper-v5' -> 'SparseHopper'; 'CartPole-v1' -> 'CartPole'."""
    name = env_id.split("/")[-1]
    return name.rsplit("-v", 1)[0]


def spec_for(env_id: str) -> EnvSpec | None:
    """The hand-written spec for this id, or None (the generic describer takes over)."""
    name = env_base_name(env_id)
    if name in _SPARSE_FAMILIES:
        dense = _SPECS[_SPARSE_FAMILIES[name]]
        return EnvSpec(
            family=name.lower(),
            observation=dense.observation,
            action_names=dense.action_names,
            action_unit=dense.action_unit,
        )
    return _SPECS.get(name)
