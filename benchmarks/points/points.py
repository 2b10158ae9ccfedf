"""Do GridS's points see? Train GridS variants on the same demos, then measure where their points go.

Each variant trains with ``grids-vla train`` settings into ``OUT/<variant>_s<seed>`` (resumes where it stopped), then
its points are measured on demo frames against the simulator's ground truth
(:func:`grids_vla.experiments.points.points_on_demos`: mobility, share within ``--radius`` px of the object to move,
the target or the gripper, share on their segmentation), beside the fixed-grid anchors and uniform random points on
the same frames. Results: ``OUT/<run>/points.json`` per run and, with ``--archive DIR``, a copy of each run's
``points.json`` / ``metrics.csv`` / ``train_config.json`` in ``DIR/<run>/`` and the table ``DIR/points.md``.

    OMP_NUM_THREADS=2 python benchmarks/points/points.py --data runs/points/data --steps 750 \\
        --variants pooled attention pooled-l0 attention-l0 --out runs/points --archive benchmarks/points
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from grids_vla._io import atomic_path, atomic_write_text
from grids_vla.envs.libero.dataset import data_image_size
from grids_vla.experiments.points import points_on_demos
from grids_vla.experiments.train import TrainConfig, train
from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy
from grids_vla.policy.checkpoint import latest_checkpoint

# GridS-16 variants compared here: overrides of the default GridSVLAConfig (and, under "train", of TrainConfig).
VARIANTS: dict[str, dict] = {
    "pooled": {},  # the paper's predictor, after the encoder (the project's default)
    "attention": {"predictor": "attention"},
    "pooled-l0": {"after_layer": 0},  # resample the patch embeddings, before any ViT block
    "attention-l0": {"predictor": "attention", "after_layer": 0},
    "attention-lang-l0": {"predictor": "attention", "after_layer": 0, "cond_on_language": True},
    "pooled-lang-l0": {"after_layer": 0, "cond_on_language": True},
    "attention-l1": {"predictor": "attention", "after_layer": 1},
    # the attention maps also get the gradient of the attention-pooled features (straight-through)
    "attention-ag": {"predictor": "attention", "reducer_kwargs": {"attention_grad": True}},
    "attention-ag-l0": {"predictor": "attention", "after_layer": 0, "reducer_kwargs": {"attention_grad": True}},
    "attention-ag-lang-l0": {"predictor": "attention", "after_layer": 0, "cond_on_language": True,
                             "reducer_kwargs": {"attention_grad": True}},
    # the coordinate heads learn 10x / 30x / 100x faster than the rest (GridSVLAConfig.points_lr_scale)
    "pooled-lr10": {"points_lr_scale": 10.0},
    "pooled-l0-lr10": {"after_layer": 0, "points_lr_scale": 10.0},
    "attention-lr10": {"predictor": "attention", "points_lr_scale": 10.0},
    "attention-l0-lr10": {"predictor": "attention", "after_layer": 0, "points_lr_scale": 10.0},
    "attention-l0-lr30": {"predictor": "attention", "after_layer": 0, "points_lr_scale": 30.0},
    "attention-l0-lr100": {"predictor": "attention", "after_layer": 0, "points_lr_scale": 100.0},
    "attention-lr30": {"predictor": "attention", "points_lr_scale": 30.0},
    "pooled-l0-lr30": {"after_layer": 0, "points_lr_scale": 30.0},
    # the 30x head told the instruction, and / or reading the stem's position-free tokens (point_features="stem")
    "attention-lr30-lang": {"predictor": "attention", "points_lr_scale": 30.0, "cond_on_language": True},
    "attention-lr30-stem": {"predictor": "attention", "points_lr_scale": 30.0, "point_features": "stem"},
    "attention-lr30-stem-lang": {"predictor": "attention", "points_lr_scale": 30.0, "point_features": "stem",
                                 "cond_on_language": True},
    # the same heads inside the encoder (after_layer=0: the ViT runs on the 16 sampled tokens), the in-encoder
    # placement's speed with points placed by content and the instruction
    "attention-l0-lr30-lang": {"predictor": "attention", "after_layer": 0, "points_lr_scale": 30.0,
                               "cond_on_language": True},
    "attention-l0-lr30-stem-lang": {"predictor": "attention", "after_layer": 0, "points_lr_scale": 30.0,
                                    "point_features": "stem", "cond_on_language": True},
    # the policy never reads the arm's state (GridSVLAConfig.state_dropout=1), so every frame needs the images
    "pooled-nostate": {"state_dropout": 1.0},
    "attention-nostate": {"predictor": "attention", "state_dropout": 1.0},
    "attention-lr30-nostate": {"predictor": "attention", "points_lr_scale": 30.0, "state_dropout": 1.0},
    "pooled-state50": {"state_dropout": 0.5},
    # a squared-error loss: the frames the policy gets badly wrong weigh more (benchmarks/so101/RESULTS.md)
    "pooled-l2": {"action_head": "l2"},
    "attention-lr30-l2": {"predictor": "attention", "points_lr_scale": 30.0, "action_head": "l2"},
    # and each demo's first 16 frames (the arm still at its start pose) drawn 6x as often (TrainConfig.start_frames)
    "pooled-l2-start16x6": {"action_head": "l2", "train": {"start_frames": 16, "start_weight": 6}},
    "attention-lr30-l2-start16x6": {"predictor": "attention", "points_lr_scale": 30.0, "action_head": "l2",
                                    "train": {"start_frames": 16, "start_weight": 6}},
}
ARCHIVED = ("points.json", "metrics.csv", "train_config.json")


def split_variant(variant: str) -> tuple[dict, dict]:
    """A variant's ``(GridSVLAConfig fields, TrainConfig fields)``."""
    fields = dict(VARIANTS[variant])
    return fields, fields.pop("train", {})


def run_one(args: argparse.Namespace, variant: str, seed: int) -> dict:
    out = Path(args.out) / f"{variant}_s{seed}"
    result = out / "points.json"
    if result.is_file():
        return json.loads(result.read_text())
    done = latest_checkpoint(out)
    if done is None or done.name != f"step_{args.steps:07d}":
        model_fields, train_fields = split_variant(variant)
        cfg = TrainConfig(data=args.data, out=str(out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=seed, save_every=250, log_every=50, resume="latest" if done is not None else None,
                          overwrite=done is None, **train_fields)
        model = GridSVLAConfig(k=16, image_size=data_image_size(args.data), **model_fields)
        done = Path(train(cfg, None if done is not None else model)["checkpoint"])
    policy = GridSVLAPolicy.from_pretrained(done).eval()
    rep = {"variant": variant, "seed": seed, "steps": args.steps, "checkpoint": done.name,
           "overrides": VARIANTS[variant],
           "cameras": points_on_demos(policy, args.data, demos_per_task=args.demos_per_task,
                                      frames_per_demo=args.frames_per_demo, radius=args.radius)}
    atomic_write_text(result, json.dumps(rep, indent=2))
    return rep


def table(reports: list[dict]) -> str:
    lines = ["| run | camera | moves within episode | moves across episodes | within r: GridS | fixed grid | random "
             "| on target pixels: GridS | fixed grid | random | mean dist px: GridS | fixed grid |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rep in reports:
        for cam, r in rep["cameras"].items():
            p, f, u = r["policy"], r["fixed-grid"], r["random"]
            lines.append(f"| {rep['variant']}_s{rep['seed']} | {cam} | {p['within_episode']:.4f} | "
                         f"{p['across_episodes']:.4f} | {p['within_radius']:.3f} | {f['within_radius']:.3f} | "
                         f"{u['within_radius']:.3f} | {p['on_mask']:.3f} | {f['on_mask']:.3f} | {u['on_mask']:.3f} | "
                         f"{p['mean_distance_px']:.1f} | {f['mean_distance_px']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of *_demo.hdf5 task files (train and measure)")
    ap.add_argument("--out", default="runs/points")
    ap.add_argument("--variants", nargs="+", default=["pooled", "attention", "pooled-l0", "attention-l0"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=750)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--demos-per-task", type=int, default=4)
    ap.add_argument("--frames-per-demo", type=int, default=8)
    ap.add_argument("--radius", type=float, default=12.0, help="on-target radius in px (of the policy's image)")
    ap.add_argument("--archive", default=None, help="committed folder for the small result files and points.md")
    args = ap.parse_args(argv)
    reports = []
    for seed in args.seeds:
        for variant in args.variants:
            reports.append(run_one(args, variant, seed))
            print(table(reports[-1:]), file=sys.stderr, flush=True)
            if args.archive:
                dst = Path(args.archive) / f"{variant}_s{seed}"
                for name in ARCHIVED:
                    with atomic_path(dst / name) as tmp:
                        shutil.copyfile(Path(args.out) / f"{variant}_s{seed}" / name, tmp)
    if args.archive:
        archived = [json.loads(p.read_text()) for p in sorted(Path(args.archive).glob("*/points.json"))]
        atomic_write_text(Path(args.archive) / "points.md", table(archived))
    return 0


if __name__ == "__main__":
    sys.exit(main())
