"""Where the task is in each camera image: the simulator's ground truth that GridS's points are measured against.

A LIBERO task names its objects of interest (``env.obj_of_interest``: the object to move and the target fixture or
region); with the gripper they are the task's *targets*. :func:`target_pixels` projects their positions into a
camera with the simulator's camera matrices and :func:`target_mask` renders their segmentation, both in the
coordinates of the images the policy sees: upright (LIBERO's raw renders are flipped on both axes) and continuous,
``x`` in ``[0, W]`` to the right and ``y`` in ``[0, H]`` downwards, so pixel ``(row i, col j)`` covers
``[j, j + 1] x [i, i + 1]`` and an image fraction ``f`` of a GridS point is at ``f * size``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .suites import CAMERAS

__all__ = ["GRIPPER", "target_names", "target_pixels", "target_mask"]

#: The gripper's body in LIBERO's Panda scenes (the end-effector frame between the fingers).
GRIPPER = "gripper0_eef"
_GRIPPER_ROOT = "gripper0_right_gripper"  # the body whose subtree is the whole gripper, for segmentation


def target_names(env: Any) -> list[str]:
    """The task's objects of interest followed by the gripper."""
    return [*map(str, env.env.obj_of_interest), GRIPPER]


def _resolve(model: Any, name: str) -> tuple[str, int]:
    """``("body", id)`` or ``("site", id)`` of a target name: an object ``X`` is body ``X_main`` (or ``X``), a region
    ``X`` is a site."""
    import mujoco

    for kind, obj, candidate in (("body", mujoco.mjtObj.mjOBJ_BODY, name + "_main"),
                                 ("body", mujoco.mjtObj.mjOBJ_BODY, name),
                                 ("site", mujoco.mjtObj.mjOBJ_SITE, name)):
        idx = mujoco.mj_name2id(model, obj, candidate)
        if idx >= 0:
            return kind, idx
    raise ValueError(f"target {name!r} is neither a body ({name}_main, {name}) nor a site of this scene")


def _camera(env: Any, camera: str) -> tuple[str, int]:
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; available: {sorted(CAMERAS)}")
    return CAMERAS[camera], env.image_size


def target_pixels(env: Any, camera: str) -> np.ndarray:
    """``(T, 2)`` continuous ``(x, y)`` pixel positions of :func:`target_names` in ``camera``'s upright image at the
    env's image size; a target behind the camera gets ``inf``. Uses the current simulator state."""
    import mujoco

    cam_name, size = _camera(env, camera)
    m, d = env.sim.model._model, env.sim.data._data
    world = []
    for name in target_names(env):
        kind, idx = _resolve(m, name)
        world.append(d.xpos[idx] if kind == "body" else d.site_xpos[idx])
    cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam_name)
    local = (np.asarray(world) - d.cam_xpos[cam]) @ d.cam_xmat[cam].reshape(3, 3)  # camera frame; it looks down -z
    depth = -local[:, 2]
    focal = 1.0 / np.tan(np.deg2rad(m.cam_fovy[cam]) / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc = focal * local[:, :2] / depth[:, None]  # x right, y up, in [-1, 1] inside the view
    # The upright image is the render flipped on both axes: image x = (1 - ndc_x) / 2, image y = (1 - ndc_y) / 2.
    px = (1.0 - ndc) / 2.0 * size
    px[depth <= 1e-6] = np.inf
    return px


def _subtree(model: Any, root: int) -> np.ndarray:
    bodies = {root}
    for b in range(root + 1, model.nbody):  # MuJoCo orders bodies so a parent precedes its children
        if model.body_parentid[b] in bodies:
            bodies.add(b)
    return np.flatnonzero(np.isin(model.geom_bodyid, list(bodies)))


def target_mask(env: Any, camera: str) -> np.ndarray:
    """``(H, W)`` bool mask of the pixels showing a target (a region counts as the fixture that holds it) in
    ``camera``'s upright image, from the renderer's segmentation of the current state."""
    import mujoco

    cam_name, size = _camera(env, camera)
    m = env.sim.model._model
    geoms = []
    for name in target_names(env):
        kind, idx = _resolve(m, _GRIPPER_ROOT if name == GRIPPER else name)
        geoms.append(_subtree(m, idx if kind == "body" else int(m.site_bodyid[idx])))
    seg = env.sim.render(camera_name=cam_name, width=size, height=size, segmentation=True)
    hit = (seg[..., 0] == int(mujoco.mjtObj.mjOBJ_GEOM)) & np.isin(seg[..., 1], np.concatenate(geoms))
    return np.ascontiguousarray(hit[::-1, ::-1])
