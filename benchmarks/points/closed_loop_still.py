"""Does the points default's movement follow the task in closed loop, in distribution? Its points against themselves
held still (issue "Points that see").

The study evaluated the instructed stem head inside the encoder (`grids-16-l0-attn-lr30-stem-lang`, seeds 0-2) in
distribution before points reports held the `still` baseline (the policy's own points held at their mean position over
each episode, on the same frames). This replays those evaluations from the archived float16 policies (the same
episodes: every episode's actions digest must match the archived one), keeps their results and episode lists under
``benchmarks/points/held_still/closed_loop/s<seed>/`` and prints, per camera, the share of points on the task's pixels
minus the fixed grid's and minus held still, pooled over the seeds with a seed-then-episode bootstrap.

    MUJOCO_GL=egl OMP_NUM_THREADS=2 python benchmarks/points/closed_loop_still.py  # ~12 min a seed on 2 cores

Resumable per episode (``--out``); a seed whose replay is archived is not replayed again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from grids_vla.experiments.evaluate import EvalConfig, evaluate
from grids_vla.experiments.stats import seed_bootstrap_mean

REPO = Path(__file__).resolve().parents[2]
STUDY = REPO / "benchmarks" / "libero" / "study" / "libero_object"
VARIANT = "grids-16-l0-attn-lr30-stem-lang"
ARCHIVE = REPO / "benchmarks" / "points" / "held_still" / "closed_loop"
KEPT = ("results.json", "episodes.jsonl")
CAMERAS = ("agentview", "eye_in_hand")
BASELINES = {"fixed-grid": "fixed grid", "still": "held still"}


def _episodes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replay(seed: int, out: Path, workers: int, threads: int) -> Path:
    """Evaluate seed ``seed``'s archived policy on the study's in-distribution episodes; returns its archive folder."""
    run, dest = STUDY / f"{VARIANT}_s{seed}", ARCHIVE / f"s{seed}"
    if (dest / "results.json").is_file():
        return dest
    study = json.loads((run / "results.json").read_text())["run"]
    result = evaluate(EvalConfig(
        checkpoint=str(run / "checkpoint"), suite=study["suite"], episodes_per_task=study["episodes_per_task"],
        tasks=tuple(study["tasks"]), max_steps=study["max_steps"], execute=study["execute"],
        settle_steps=study["settle_steps"], threads=threads, workers=workers, out=str(out / f"s{seed}")))
    if result["run"]["weights_sha256"] != study["weights_sha256"]:
        raise SystemExit(f"seed {seed}: {run / 'checkpoint'} is not the policy the study evaluated (weights digest)")
    then = {(e["task_id"], e["init_state"]): e["actions_sha256"] for e in _episodes(run / "episodes.jsonl")}
    now = {(e["task_id"], e["init_state"]): e["actions_sha256"] for e in _episodes(out / f"s{seed}" / KEPT[1])}
    if now != then:
        differ = sorted(k for k in then if now.get(k) != then[k])
        raise SystemExit(f"seed {seed}: the replay did not play the study's episodes ({len(differ)} of {len(then)} "
                         f"differ, first (task, init state) {differ[:3]}); nothing archived")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in KEPT:
        shutil.copy2(out / f"s{seed}" / name, tmp / name)
    tmp.rename(dest)
    return dest


def table(folders: dict[int, Path], n_boot: int = 2000) -> str:
    """Markdown: per camera, the policy's on-task share and each baseline's, per seed, and the pooled differences."""
    recs = {s: [e["points"] for e in _episodes(f / KEPT[1]) if e.get("points")] for s, f in folders.items()}
    seeds = ", ".join(f"s{s}" for s in folders)
    head = ("| camera | seed | on the task's pixels: points | fixed grid | held still |\n"
            "|---|---|---:|---:|---:|\n")
    rows, pooled = [], []
    for cam in CAMERAS:
        # per seed, this camera's episode records that saw frames
        cells = {s: [c[cam] for c in points if c.get(cam) and c[cam]["frames"]] for s, points in recs.items()}
        for s, seen in cells.items():
            n = sum(c["frames"] for c in seen)
            share = {k: sum(c[k]["on_mask"] * c["frames"] for c in seen) / n for k in ("policy", *BASELINES)}
            rows.append(f"| {cam} | s{s} | {share['policy']:.3f} | {share['fixed-grid']:.3f} | {share['still']:.3f} |")
        for base, shown in BASELINES.items():
            diffs = {s: [(c["policy"]["on_mask"] - c[base]["on_mask"], c["frames"]) for c in seen]
                     for s, seen in cells.items()}
            mean, lo, hi = seed_bootstrap_mean(diffs, n_boot)
            pooled.append(f"| {cam} | points - {shown} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return (head + "\n".join(rows) + f"\n\nPooled over {seeds} (weighted by policy calls; 95 % seed-then-episode "
            f"bootstrap, {n_boot} resamples):\n\n| camera | on the task's pixels | difference [95 %] |\n"
            "|---|---|---:|\n" + "\n".join(pooled) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/points_still_closed_loop", help="evaluation folders (resumable)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per evaluation process")
    args = p.parse_args(argv)
    missing = [s for s in args.seeds if not (STUDY / f"{VARIANT}_s{s}" / "checkpoint").is_dir()]
    if missing:
        raise SystemExit(f"--seeds: no archived {VARIANT} policy for seed(s) {missing} under {STUDY}")
    folders = {s: replay(s, Path(args.out), args.workers, args.threads) for s in args.seeds}
    sys.stdout.write(table(folders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
