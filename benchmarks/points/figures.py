"""Draw where policies' GridS points look on demo frames: one figure per checkpoint (and camera) with demos as rows and
evenly spaced frames as columns, plus a trajectory panel (every point's path over one demo, on its first frame).

Each panel shows the frame, the policy's K points (one colour per point index, the same in every panel, so a reader
sees whether point i stays put or follows something) and the task's targets projected from the demo's saved simulator
state (crosses: the object to move, the basket, the gripper). The title gives the mobility and the share of points
within ``--radius`` px of a target, beside the fixed-grid anchors and uniform random points on the same frames, as
:func:`grids_vla.experiments.points.points_on_demos` measures them (``--demos-per-task`` demos of every task file,
``--frames-per-demo`` frames each).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/points/figures.py --data runs/libero/data/libero_object \\
        --checkpoint grids-16_s0=runs/study/runs/grids-16_s0/final --out docs/figures

Writes ``OUT/points_<label>.png`` (agentview), ``OUT/points_<label>_<camera>.png`` for any other camera in
``--cameras`` and ``OUT/points_<label>_trajectory.png``; ``--summary FILE`` also writes the measured numbers as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from grids_vla._io import atomic_path, atomic_write_text
from grids_vla.experiments.points import demo_frames, mobility, points_report

FIRST = "agentview"  # the camera whose figure is points_<label>.png and whose numbers go in the titles
DPI = 100
MAX_BYTES = 195_000  # a figure's PNG stays under this (lower resolution, then fewer colours, if needed)
LABEL = re.compile(r"^[A-Za-z0-9._-]+$")
EXPECTED_CKPT = ("a save_pretrained folder (config.json, model.safetensors) or a training run folder "
                 "(checkpoints/latest)")
EXPECTED_DATA = "a folder of *_demo.hdf5 files written by `grids-vla data libero`"


class InputError(ValueError):
    """Bad command-line input: reported as one line, naming the flag."""


# ---------------------------------------------------------------------------------------------------------- inputs

def parse_checkpoints(items: list[str]) -> list[tuple[str, Path]]:
    """``LABEL=PATH`` items -> ``(label, path)``; labels are file-name safe and distinct, paths exist."""
    out: list[tuple[str, Path]] = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not LABEL.match(label) or not path:
            raise InputError(f"--checkpoint {item!r}: expected LABEL=PATH with a LABEL of letters, digits, '.', '_', "
                             f"'-' (it names the output files)")
        if label in (lab for lab, _ in out):
            raise InputError(f"--checkpoint {item!r}: label {label!r} is given twice; expected distinct labels")
        out.append((label, Path(path)))
    return out


def load_policy(label: str, path: Path) -> Any:
    """The policy of ``path`` (float32, eval mode); an :class:`InputError` for anything that is not a GridS-like
    policy checkpoint."""
    from grids_vla.policy import GridSVLAPolicy
    from grids_vla.policy.checkpoint import CONFIG_NAME, latest_checkpoint

    if not path.exists():
        raise InputError(f"--checkpoint {label}={path}: nothing there; expected {EXPECTED_CKPT}")
    folder = path if (path / CONFIG_NAME).is_file() else latest_checkpoint(path)
    if folder is None:
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) if path.is_dir() else "a file"
        raise InputError(f"--checkpoint {label}={path}: found {found or 'an empty folder'}; expected {EXPECTED_CKPT}")
    try:
        policy = GridSVLAPolicy.from_pretrained(folder).float().eval()
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise InputError(f"--checkpoint {label}={path}: {e}") from e
    if policy.config.reducer == "dense":
        raise InputError(f"--checkpoint {label}={path}: a dense policy (reducer 'dense') has no sampling points; "
                         f"expected a GridS-like policy")
    return policy


def check_data(data: Path) -> list[Path]:
    from grids_vla.envs.libero.dataset import find_demo_files

    if not data.exists():
        raise InputError(f"--data {data}: nothing there; expected {EXPECTED_DATA}")
    try:
        return find_demo_files(data)
    except FileNotFoundError as e:
        found = ", ".join(sorted(p.name for p in data.iterdir())[:6]) if data.is_dir() else data.name
        raise InputError(f"--data {data}: found {found or 'an empty folder'} but no *_demo.hdf5 file; "
                         f"expected {EXPECTED_DATA}") from e


# -------------------------------------------------------------------------------------------------------- collect

def collect(policy: Any, data: Path, demos_per_task: int = 4, frames_per_demo: int = 8, tasks: int | None = None,
            radius: float = 12.0, seed: int = 0, trajectory_task: int = 0, trajectory_frames: int = 48) -> dict:
    """What the figures are drawn from: per camera the demo frames with the policy's points and the targets
    (:func:`~grids_vla.experiments.points.demo_frames`), their :func:`points_report` (the numbers of
    ``points_on_demos``) and the trajectory demo (demo 0 of task file ``trajectory_task``, ``trajectory_frames``
    evenly spaced frames)."""
    from grids_vla.envs.libero.dataset import find_demo_files

    c = policy.config
    episodes = demo_frames(policy, data, demos_per_task, frames_per_demo, tasks, images=True)
    reports = {cam: points_report(eps, c.image_size, radius, seed, c.grid) for cam, eps in episodes.items()}
    files = find_demo_files(data)[:tasks]
    trajectory = demo_frames(policy, files[min(trajectory_task, len(files) - 1)], 1, trajectory_frames, images=True)
    return {"episodes": episodes, "reports": reports, "trajectory": {cam: eps[0] for cam, eps in trajectory.items()},
            "size": c.image_size, "k": c.k, "grid": c.grid, "demos_per_task": demos_per_task, "radius": radius}


def grid_rows(n_tasks: int, demos_per_task: int, rows: int) -> list[int]:
    """Episode indices of the figure's rows: demo 0 of ``rows`` task files spread evenly over the ``n_tasks``."""
    tasks = np.unique(np.linspace(0, n_tasks - 1, min(rows, n_tasks)).round().astype(int))
    return [int(t) * demos_per_task for t in tasks]


# ----------------------------------------------------------------------------------------------------------- draw

def point_colours(k: int) -> list[Any]:
    """One distinct colour per point index (tab20's strong shades first, then its light ones; hsv beyond 20)."""
    import matplotlib

    if k > 20:
        return [matplotlib.colormaps["hsv"](i / k) for i in range(k)]
    tab = matplotlib.colormaps["tab20"]
    return [tab(i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:k]]


def target_style(names: list[str]) -> list[tuple[str, str]]:
    """(colour, legend name) per target: the object to move, where it goes (fixture or region), the gripper."""
    roles = ["object to move", *["where it goes"] * (len(names) - 2), "gripper"]
    colours = ["red", *["yellow"] * (len(names) - 2), "cyan"]
    return list(zip(colours, roles))


def _short(instruction: str, width: int = 26) -> str:
    text = re.sub(r"^(pick up|pick) (the )?", "", instruction)
    text = re.sub(r" and place it in the basket$", "", text)
    return text if len(text) <= width else text[:width - 1] + "."


def _numbers(rep: dict) -> str:
    p, f, r = rep["policy"], rep["fixed-grid"], rep["random"]
    return (f"points move {p['within_episode']:.4f} of the image within a demo, {p['across_episodes']:.4f} across "
            f"demos; within {rep['radius_px']:g} px of a target: {p['within_radius']:.3f} (fixed grid "
            f"{f['within_radius']:.3f}, random {r['within_radius']:.3f})")


def _panel(ax: Any, image: np.ndarray, points: np.ndarray, targets: np.ndarray, colours: list[Any],
           styles: list[tuple[str, str]], size: float, gid: str) -> None:
    ax.imshow(image, extent=(0, size, size, 0), interpolation="nearest")
    ax.scatter(points[:, 0], points[:, 1], s=13, c=colours, edgecolors="black", linewidths=0.4, zorder=3, gid=gid)
    for (colour, _), (x, y) in zip(styles, targets):
        if np.isfinite(x) and np.isfinite(y):
            ax.scatter([x], [y], s=30, marker="x", c=colour, linewidths=1.4, zorder=4)
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig: Any, styles: list[tuple[str, str]], k: int, ncol: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", mfc="lightgrey", mec="black", label=f"{k} points, one colour each")]
    handles += [Line2D([], [], ls="", marker="x", color=colour, mew=1.6, label=name)
                for colour, name in dict(styles).items()]
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False)


def draw_grid(label: str, collected: dict, camera: str = FIRST, rows: int = 4) -> Any:
    """The matplotlib figure of ``camera``: rows = demos of different tasks, columns = the measured frames. Every
    point scatter has gid ``points/<episode>/<frame>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps, size = collected["episodes"][camera], collected["size"]
    n_tasks = len(eps) // collected["demos_per_task"]
    chosen = grid_rows(n_tasks, collected["demos_per_task"], rows)
    cols = len(eps[0]["steps"])
    colours = point_colours(collected["k"])
    styles = target_style(eps[0]["target_names"])
    fig, axes = plt.subplots(len(chosen), cols, figsize=(1.15 * cols + 0.3, 1.15 * len(chosen) + 1.05),
                             squeeze=False)
    for r, e in enumerate(chosen):
        ep = eps[e]
        for t in range(cols):
            ax = axes[r, t]
            _panel(ax, ep["images"][t], ep["points"][t], ep["targets"][t], colours, styles, size, f"points/{e}/{t}")
            ax.set_title(f"t={int(ep['steps'][t])}", fontsize=6, pad=1.5)
        axes[r, 0].set_ylabel(_short(ep["instruction"], 18), fontsize=6)
    rep = collected["reports"][camera]
    fig.suptitle(f"{label}, {camera}: {_numbers(rep)}\n{rep['frames']} frames of {rep['episodes']} demos measured; "
                 f"rows: demo 0 of {len(chosen)} tasks", fontsize=7)
    _legend(fig, styles, collected["k"], ncol=4)
    fig.subplots_adjust(left=0.03, right=0.995, top=1 - 0.5 / fig.get_figheight(), bottom=0.3 / fig.get_figheight(),
                        wspace=0.04, hspace=0.16)
    return fig


def draw_trajectory(label: str, collected: dict, cameras: list[str]) -> Any:
    """One panel per camera: the trajectory demo's first frame with every point's path (a line in its colour, a dot
    where it starts) and the targets' paths (dashed); the fixed-grid anchors as small white squares. Every point path
    has gid ``path/<camera>/<point>``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from grids_vla.experiments.points import baseline_points

    size, k = collected["size"], collected["k"]
    colours = point_colours(k)
    fig, axes = plt.subplots(1, len(cameras), figsize=(max(3.4, 3.1 * len(cameras)), 4.3),
                             squeeze=False)
    anchors = baseline_points("fixed-grid", k, 1, size, grid=collected["grid"])[0]
    for ax, cam in zip(axes[0], cameras):
        ep = collected["trajectory"][cam]
        styles = target_style(ep["target_names"])
        ax.imshow(ep["images"][0], extent=(0, size, size, 0), interpolation="nearest")
        ax.scatter(anchors[:, 0], anchors[:, 1], s=9, marker="s", facecolors="none", edgecolors="white",
                   linewidths=0.6, zorder=2)
        for j, (colour, _) in enumerate(styles):
            track = ep["targets"][:, j]
            track = track[np.isfinite(track).all(axis=1)]
            ax.plot(track[:, 0], track[:, 1], ls="--", lw=0.9, color=colour, zorder=2)
            if len(track):
                ax.scatter(track[:1, 0], track[:1, 1], s=30, marker="x", c=colour, linewidths=1.4, zorder=4)
        for i in range(k):
            path = ep["points"][:, i]
            ax.plot(path[:, 0], path[:, 1], lw=1.2, color=colours[i], zorder=3, gid=f"path/{cam}/{i}")
            ax.scatter(path[:1, 0], path[:1, 1], s=13, c=[colours[i]], edgecolors="black", linewidths=0.4, zorder=3)
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        moved = mobility([ep["points"]], size)["within_episode"] * size
        grip = ep["targets"][:, -1]
        grip = grip[np.isfinite(grip).all(axis=1)]
        gmoved = float(np.mean(grip.std(axis=0))) if len(grip) > 1 else float("nan")
        ax.set_title(f"{cam}: points move {moved:.2f} px (std),\ngripper {gmoved:.1f} px", fontsize=7, pad=2)
    ep = collected["trajectory"][cameras[0]]
    fig.suptitle(f"{label}: {len(ep['steps'])} frames of demo {ep['demo']} of \"{_short(ep['instruction'], 30)}\"\n"
                 f"over its first frame; lines: paths,\nwhite squares: the fixed-grid anchors", fontsize=7)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="grey", lw=1.2, marker="o", mfc="lightgrey", mec="black", ms=4,
                      label="point path (start dot)")]
    handles += [Line2D([], [], color=c, ls="--", marker="x", mew=1.4, label=n)
                for c, n in dict(target_style(ep["target_names"])).items()]
    fig.legend(handles=handles, loc="lower center", ncol=2 if len(cameras) == 1 else 4, fontsize=6.5, frameon=False)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.95 / fig.get_figheight(),
                        bottom=0.42 / fig.get_figheight(), wspace=0.05)
    return fig


def save_png(fig: Any, path: Path, limit: int = MAX_BYTES) -> int:
    """Write ``fig`` to ``path`` atomically as a 256-colour palette PNG (at a lower resolution, then with fewer colours,
    while it is over ``limit`` bytes; the same bytes for the same figure); returns the size in bytes."""
    import matplotlib.pyplot as plt
    from PIL import Image

    for dpi, colours in ((DPI, 256), (0.9 * DPI, 256), (0.8 * DPI, 256), (0.8 * DPI, 128), (0.8 * DPI, 64)):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        buf.seek(0)
        png = io.BytesIO()
        Image.open(buf).convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE).save(png, format="PNG", optimize=True)
        if png.tell() <= limit:
            break
    plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.getvalue())
    return len(png.getvalue())


# ------------------------------------------------------------------------------------------------------------ main

def cached(cache: str | None, label: str, path: Path, data: Path, options: tuple, make: Any) -> dict:
    """``make()``, or its pickled result from an earlier run with the same checkpoint files, data and options."""
    import pickle

    if cache is None:
        return make()
    files = sorted(p for p in [*path.rglob("*.safetensors"), *path.rglob("config.json"), *data.rglob("*_demo.hdf5")])
    key = [str(path.resolve()), str(data.resolve()), list(options),
           [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]]
    file = Path(cache) / f"{label}.pkl"
    if file.is_file():
        with open(file, "rb") as f:
            kept = pickle.load(f)
        if kept["key"] == key:
            return kept["collected"]
    collected = make()
    with atomic_path(file) as tmp, open(tmp, "wb") as f:
        pickle.dump({"key": key, "collected": collected}, f)
    return collected


def summary_of(label: str, path: Path, collected: dict) -> dict:
    return {"label": label, "checkpoint": str(path), "demos_per_task": collected["demos_per_task"],
            "cameras": collected["reports"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", nargs="+", required=True, metavar="LABEL=PATH",
                    help="policy checkpoints: a save_pretrained folder or a training run folder (its latest)")
    ap.add_argument("--data", required=True, help="folder of *_demo.hdf5 task files (`grids-vla data libero`)")
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--cameras", nargs="+", default=[FIRST], help="cameras to draw (agentview first; eye_in_hand)")
    ap.add_argument("--demos-per-task", type=int, default=4, help="demos measured per task file")
    ap.add_argument("--frames-per-demo", type=int, default=8, help="frames measured per demo (the figure's columns)")
    ap.add_argument("--tasks", type=int, default=None, help="only the first N task files")
    ap.add_argument("--rows", type=int, default=4, help="demos drawn (demo 0 of tasks spread over the files)")
    ap.add_argument("--trajectory-task", type=int, default=0, help="task file of the trajectory panel (its demo 0)")
    ap.add_argument("--trajectory-frames", type=int, default=48)
    ap.add_argument("--radius", type=float, default=12.0, help="on-target radius in px (of the policy's image)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random-points baseline")
    ap.add_argument("--summary", default=None, help="also write the measured numbers to this JSON file")
    ap.add_argument("--cache", default=None, help="keep each checkpoint's collected frames here (redraw without "
                                                  "the simulator while checkpoint, data and options are the same)")
    args = ap.parse_args(argv)
    try:
        for flag, value in (("--demos-per-task", args.demos_per_task), ("--frames-per-demo", args.frames_per_demo),
                            ("--rows", args.rows), ("--trajectory-frames", args.trajectory_frames)):
            if value < 1 or (flag == "--trajectory-frames" and value < 2):
                raise InputError(f"{flag} {value}: expected a positive count (at least 2 trajectory frames)")
        ckpts = parse_checkpoints(args.checkpoint)
        data = Path(args.data)
        files = check_data(data)
        from grids_vla.envs.libero.dataset import data_image_size

        size = data_image_size(data)
        policies = []
        for label, path in ckpts:
            policy = load_policy(label, path)
            if policy.config.image_size != size:
                raise InputError(f"--checkpoint {label}={path}: the policy takes {policy.config.image_size} px images "
                                 f"but --data {data} holds {size} px ones; expected the data it was trained on")
            missing = [cam for cam in args.cameras if cam not in policy.config.cameras]
            if missing or args.cameras[0] != FIRST:
                raise InputError(f"--cameras {' '.join(args.cameras)}: expected {FIRST} first and cameras of "
                                 f"checkpoint {label} ({', '.join(policy.config.cameras)})")
            policies.append((label, path, policy))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summaries = []
    out = Path(args.out)
    for label, path, policy in policies:
        options = (args.demos_per_task, args.frames_per_demo, args.tasks, args.radius, args.seed,
                   min(args.trajectory_task, len(files) - 1), args.trajectory_frames)
        collected = cached(args.cache, label, path, data, options,
                           lambda: collect(policy, data, *options))  # noqa: B023 (called at once)
        for cam in args.cameras:
            name = f"points_{label}.png" if cam == FIRST else f"points_{label}_{cam}.png"
            nbytes = save_png(draw_grid(label, collected, cam, args.rows), out / name)
            print(f"{out / name}: {nbytes // 1024} KB; {cam}: {_numbers(collected['reports'][cam])}", flush=True)
        name = f"points_{label}_trajectory.png"
        nbytes = save_png(draw_trajectory(label, collected, args.cameras), out / name)
        print(f"{out / name}: {nbytes // 1024} KB", flush=True)
        summaries.append(summary_of(label, path, collected))
    if args.summary:
        atomic_write_text(args.summary, json.dumps(summaries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
