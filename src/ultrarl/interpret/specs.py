"""What each observation dimension and action means, per environment family.

Each spec names every quantity with its unit, and every actuator (continuous) or action
(discrete), in the Gymnasium 1.x observation layouts. The prose context (goal, reward,
termination) lives beside this file in ``contexts/<family>.md`` so a person can read and edit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ultrarl.envs.pong import PONG_ACTION_NAMES, PONG_FEATURES, pong_features_from_ram


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str  # "" for unitless quantities (cosines, counts)
    shown: bool = True  # False: kept for matching, left out of the prompt (Ant's 78 contact forces)
    decimals: int = 2  # pixel counts read better as whole numbers


# Maps a raw observation (and the previous one, for velocities) to the spec's quantities.
Decoder = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True)
class EnvSpec:
    family: str  # names the context file: contexts/<family>.md
    observation: tuple[Quantity, ...]
    action_names: tuple[str, ...]  # actuators (continuous) or discrete actions, in index order
    action_unit: str = ""  # unit of a continuous action component, e.g. "N·m (normalised)"
    decode: Decoder | None = None  # None: the observation *is* the quantities, in order
    raw_obs_dim: int | None = None  # with a decoder: the size of the raw observation

    @property
    def obs_dim(self) -> int:
        return self.raw_obs_dim if self.raw_obs_dim is not None else len(self.observation)


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

_REACHER = EnvSpec(
    family="reacher",
    observation=_q(
        ("cos of shoulder angle", ""),
        ("cos of elbow angle", ""),
        ("sin of shoulder angle", ""),
        ("sin of elbow angle", ""),
        ("target x", "m"),
        ("target y", "m"),
        ("shoulder angular velocity", "rad/s"),
        ("elbow angular velocity", "rad/s"),
        ("fingertip minus target x", "m"),
        ("fingertip minus target y", "m"),
    ),
    action_names=("shoulder", "elbow"),
    action_unit="torque in [-1, 1]",
)

_SWIMMER = EnvSpec(
    family="swimmer",
    observation=_q(
        ("front tip angle", "rad"),
        ("first rotor angle", "rad"),
        ("second rotor angle", "rad"),
        ("forward velocity", "m/s"),
        ("sideways velocity", "m/s"),
        ("front tip angular velocity", "rad/s"),
        ("first rotor angular velocity", "rad/s"),
        ("second rotor angular velocity", "rad/s"),
    ),
    action_names=("first rotor", "second rotor"),
    action_unit="torque in [-1, 1]",
)

# Ant legs by the joints' numbers in the model: 1 front left, 2 front right, 3 back left, 4 back right.
_ANT_JOINTS = tuple(
    f"{leg} {part}"
    for leg in ("front-left", "front-right", "back-left", "back-right")
    for part in ("hip", "ankle")
)
_ANT_CONTACT_BODIES = 13  # cfrc_ext of every body but the world, 6 values each
_ANT = EnvSpec(
    family="ant",
    observation=(
        *_q(
            ("torso height", "m"),
            ("torso orientation quaternion w", ""),
            ("torso orientation quaternion x", ""),
            ("torso orientation quaternion y", ""),
            ("torso orientation quaternion z", ""),
            *((f"{j} angle", "rad") for j in _ANT_JOINTS),
            ("forward velocity", "m/s"),
            ("sideways velocity", "m/s"),
            ("vertical velocity", "m/s"),
            ("roll rate", "rad/s"),
            ("pitch rate", "rad/s"),
            ("yaw rate", "rad/s"),
            *((f"{j} angular velocity", "rad/s") for j in _ANT_JOINTS),
        ),
        *(Quantity(f"contact force {i}", "N", shown=False) for i in range(6 * _ANT_CONTACT_BODIES)),
    ),
    # The actuator order of the model is not the joint order: back-right leg first.
    action_names=(
        "back-right hip", "back-right ankle", "front-left hip", "front-left ankle",
        "front-right hip", "front-right ankle", "back-left hip", "back-left ankle",
    ),
    action_unit="torque in [-1, 1]",
)

_INVERTED_PENDULUM = EnvSpec(
    family="invertedpendulum",
    observation=_q(
        ("cart position", "m"), ("pole angle", "rad"), ("cart velocity", "m/s"), ("pole angular velocity", "rad/s")
    ),
    action_names=("force on the cart",),
    action_unit="in [-3, 3]",
)

_INVERTED_DOUBLE_PENDULUM = EnvSpec(
    family="inverteddoublependulum",
    observation=_q(
        ("cart position", "m"),
        ("sin of lower pole angle", ""),
        ("sin of upper pole angle (relative)", ""),
        ("cos of lower pole angle", ""),
        ("cos of upper pole angle (relative)", ""),
        ("cart velocity", "m/s"),
        ("lower pole angular velocity", "rad/s"),
        ("upper pole angular velocity", "rad/s"),
        ("constraint force on the cart", "N"),
    ),
    action_names=("force on the cart",),
    action_unit="in [-1, 1]",
)

_PONG_QUANTITIES = tuple(Quantity(name, unit, decimals=0) for name, unit in PONG_FEATURES)
# ALE/Pong-v5 with obs_type="ram": the features are decoded from the 128 RAM bytes.
_PONG_RAM = EnvSpec(
    family="pong",
    observation=_PONG_QUANTITIES,
    action_names=PONG_ACTION_NAMES,
    decode=pong_features_from_ram,
    raw_obs_dim=128,
)
# ultrarl/PongPoint-v0 observes the decoded features directly.
_PONG_POINT = EnvSpec(family="pongpoint", observation=_PONG_QUANTITIES, action_names=PONG_ACTION_NAMES)

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
    "Reacher": _REACHER,
    "Swimmer": _SWIMMER,
    "Ant": _ANT,
    "InvertedPendulum": _INVERTED_PENDULUM,
    "InvertedDoublePendulum": _INVERTED_DOUBLE_PENDULUM,
    "Pong": _PONG_RAM,
    "PongPoint": _PONG_POINT,
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
