"""Facts about LIBERO suites, scenes and demo files that need no simulator: suite names and their step limits, the
cameras, and the robot-state layout shared by the data writer, the training reader and evaluation.

Every other module of this package builds on these; this one imports none of them (and no simulator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "CAMERAS", "CAMERA_KEYS", "DISTRACTOR_PREFIX", "MAX_STEPS", "PLUS_SUITE_TAG", "PRO_VARIANTS", "STANDARD_SUITES",
    "STATE_DIM", "STATE_KEYS", "base_suite", "pro_suite", "quat_to_axis_angle", "state_vector", "step_limit",
    "write_demo",
]

#: The four standard suites; the LIBERO-PRO variants append ``_lan``, ``_object``, ``_swap`` or ``_task``.
STANDARD_SUITES: tuple[str, ...] = ("libero_object", "libero_spatial", "libero_goal", "libero_10")
PRO_VARIANTS: tuple[str, ...] = ("lan", "object", "swap", "task")
#: LIBERO-plus suites are named ``<standard suite><PLUS_SUITE_TAG><pattern>`` (see ``plus.plus_suite``).
PLUS_SUITE_TAG = "_liberoplus_"
#: Steps the official LIBERO evaluation allows per suite (max episode length).
MAX_STEPS: dict[str, int] = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520}

#: Our camera names mapped to robosuite's.
CAMERAS: dict[str, str] = {"agentview": "agentview", "eye_in_hand": "robot0_eye_in_hand"}
#: Our camera names mapped to their image keys under ``data/demo_i/obs`` in the demo files.
CAMERA_KEYS: dict[str, str] = {"agentview": "agentview_rgb", "eye_in_hand": "eye_in_hand_rgb"}
#: Objects a scene perturbation adds (``perturb.Distractors``) are named with this prefix.
DISTRACTOR_PREFIX = "grids_distractor"

#: The robot state a policy sees, in order: end-effector position (3), end-effector orientation as axis-angle (3),
#: gripper finger positions (2); the keys are those of the demo files' ``obs`` group.
STATE_KEYS: tuple[str, ...] = ("ee_pos", "ee_ori", "gripper_states")
STATE_DIM = 8


def pro_suite(suite: str, variant: str) -> str:
    """Name of the LIBERO-PRO variant of a standard suite, e.g. ``pro_suite("libero_object", "swap")``."""
    if suite not in STANDARD_SUITES:
        raise ValueError(f"LIBERO-PRO variants exist for {STANDARD_SUITES}, not {suite!r}")
    if variant not in PRO_VARIANTS:
        raise ValueError(f"unknown LIBERO-PRO variant {variant!r}; choose from {PRO_VARIANTS}")
    return f"{suite}_{variant}"


def base_suite(suite: str) -> str | None:
    """The standard suite that ``suite`` is or derives from (a LIBERO-PRO variant or a LIBERO-plus suite), else
    ``None``."""
    if suite in STANDARD_SUITES:
        return suite
    if PLUS_SUITE_TAG in suite:
        base = suite.split(PLUS_SUITE_TAG, 1)[0]
        return base if base in STANDARD_SUITES else None
    base, _, variant = suite.rpartition("_")
    return base if base in STANDARD_SUITES and variant in PRO_VARIANTS else None


def step_limit(suite: str) -> int:
    """LIBERO's standard step limit (max episode length) for ``suite``; LIBERO-PRO and LIBERO-plus suites use their
    base suite's. Raises ``ValueError`` for any other suite."""
    base = base_suite(suite)
    if base is None:
        raise ValueError(f"no standard step limit for suite {suite!r} (only {', '.join(STANDARD_SUITES)} and their "
                         f"LIBERO-PRO / LIBERO-plus variants have one); pass --max-steps")
    return MAX_STEPS[base]


def quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw quaternions to (..., 3) axis-angle (LIBERO's ``ee_ori``)."""
    q = np.asarray(q, dtype=np.float64)
    q = q * np.where(q[..., 3:4] < 0, -1.0, 1.0)
    w = np.clip(q[..., 3], -1.0, 1.0)
    angle = 2 * np.arccos(w)
    s = np.sqrt(np.maximum(1 - w * w, 0.0))
    safe = np.where(s < 1e-8, 1.0, s)
    return np.where(s[..., None] < 1e-8, 0.0, q[..., :3] / safe[..., None] * angle[..., None])


def state_vector(obs: Mapping[str, Any]) -> np.ndarray:
    """The robot state (:data:`STATE_KEYS` concatenated along the last axis, ``STATE_DIM`` wide) of one env step's
    observation (``ee_quat``, converted to axis-angle) or of a demo's ``obs`` (``ee_ori``: a ``dataset.read_demo``
    dict or the HDF5 group), one step or ``(T, ...)``; float64 as stored."""
    ori = obs["ee_ori"] if "ee_ori" in obs else quat_to_axis_angle(obs["ee_quat"])
    return np.concatenate([np.asarray(obs["ee_pos"]), np.asarray(ori), np.asarray(obs["gripper_states"])], axis=-1)


def write_demo(demo: Any, shard: Any, images: Mapping[str, np.ndarray]) -> int:
    """Fill ``demo`` (an empty ``data/demo_i`` HDF5 group) from one generator episode shard (an open HDF5 file with
    ``attempt`` and ``seed`` attributes, ``actions``, ``states`` and ``obs/{ee_pos, ee_quat, gripper_states,
    joint_states}``) in the layout of LIBERO's demo files. ``images`` maps a :data:`CAMERA_KEYS` value to its frames
    (T, H, W, 3), as they are to be stored. Returns the number of steps."""
    n = len(shard["actions"])
    demo.attrs["num_samples"] = n
    demo.attrs["attempt"] = int(shard.attrs["attempt"])
    demo.attrs["seed"] = int(shard.attrs["seed"])
    demo.attrs["init_state"] = shard["states"][0]
    demo.create_dataset("actions", data=shard["actions"][()])
    demo.create_dataset("states", data=shard["states"][()])
    rewards = np.zeros(n, dtype=np.uint8)
    rewards[-1] = 1
    demo.create_dataset("rewards", data=rewards)
    demo.create_dataset("dones", data=rewards.copy())
    o = shard["obs"]
    obs = demo.create_group("obs")
    for key, frames in images.items():  # one frame per chunk: a training read decompresses only its frame
        obs.create_dataset(key, data=frames, compression="gzip", compression_opts=4, chunks=(1, *frames.shape[1:]))
    ee_pos, quat = o["ee_pos"][()], o["ee_quat"][()]
    ee_ori = quat_to_axis_angle(quat)
    obs.create_dataset("ee_pos", data=ee_pos)
    obs.create_dataset("ee_ori", data=ee_ori)
    obs.create_dataset("ee_states", data=np.concatenate([ee_pos, ee_ori], axis=1))
    obs.create_dataset("gripper_states", data=o["gripper_states"][()])
    obs.create_dataset("joint_states", data=o["joint_states"][()])
    demo.create_dataset("robot_states", data=np.concatenate([o["gripper_states"][()], ee_pos, quat], axis=1))
    return n
