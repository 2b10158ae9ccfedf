"""Can a policy learn an episode's first moves, where only the image says where the cube is? Two tools.

``cut`` copies a folder of demo files keeping each demo's first ``--frames`` frames. Training on the copy asks the
policy to learn only the part of the task that needs the image, so a failure there is the head's, not the data
mix's (the first moves are about a tenth of the full demos' frames):

    python benchmarks/so101/first_moves.py cut --data runs/so101/data/pick_place_bowl --frames 16 \\
        --out runs/so101/first16/pick_place_bowl

``fit`` asks a checkpoint for its chunk on the demos' own frames at the given time steps and reports, per step, the
correlation of its summed ``[dx, dy]`` over the chunk with the demos' own, and the spread of both. A policy that fits
its training frames varies its first moves as the demos do; one that answers every scene alike has a spread near 0:

    python benchmarks/so101/first_moves.py fit --checkpoint RUN --data runs/so101/data/pick_place_bowl --steps 0 2 5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from grids_vla._io import write_json
from grids_vla.envs.libero.dataset import LiberoDemoDataset, find_demo_files


def cut(data: str, frames: int, out: Path) -> int:
    """Copy every demo file under ``data`` into ``out`` (same relative paths) with each demo cut to its first
    ``frames`` frames (each file written under a temporary name, then renamed); the number of demos copied."""
    import h5py

    demos = 0
    for path in find_demo_files(data):
        final = out / (path.relative_to(data) if Path(data).is_dir() else path.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            group = dst.create_group("data")
            group.attrs.update(dict(src["data"].attrs))
            for name, demo in src["data"].items():
                copy = group.create_group(name)
                copy.attrs.update(dict(demo.attrs))
                n = min(frames, demo["actions"].shape[0])
                copy.attrs["num_samples"] = n
                obs = copy.create_group("obs")
                for key, value in demo["obs"].items():
                    obs.create_dataset(key, data=value[:n])
                for key, value in demo.items():
                    if key != "obs":
                        copy.create_dataset(key, data=value[:n])
                demos += 1
        os.replace(tmp, final)
    return demos


def fit(policy, data: str, steps: list[int], demos: int) -> dict:
    """Per time step: the policy's summed first moves against the demos' own, over up to ``demos`` demos."""
    ds = LiberoDemoDataset(find_demo_files(data), chunk=policy.config.chunk)
    res = {}
    for t in steps:
        items = [ds[i] for i in [i for i, (_, _, step) in enumerate(ds.index) if step == t][:demos]]
        if len(items) < 3:
            raise ValueError(f"--steps: only {len(items)} demos reach step {t}, expected >= 3")
        batch = {k: torch.stack([it[k] for it in items]) for k in (*policy.config.cameras, "state", "action")}
        batch["instruction"] = [it["instruction"] for it in items]
        pred = policy.predict_action(batch, generator=torch.Generator().manual_seed(0))
        mine = pred[:, :, :2].double().clamp(-1, 1).sum(1).numpy()
        theirs = batch["action"][:, :, :2].double().sum(1).numpy()
        res[str(t)] = {"demos": len(items)}
        for i, axis in enumerate(("x", "y")):
            corr = (None if mine[:, i].std() < 1e-9 or theirs[:, i].std() < 1e-9
                    else round(float(np.corrcoef(mine[:, i], theirs[:, i])[0, 1]), 3))
            res[str(t)][axis] = {"corr": corr, "policy_std": round(float(mine[:, i].std()), 3),
                                 "demo_std": round(float(theirs[:, i].std()), 3)}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cut", help="copy demo files keeping each demo's first frames")
    c.add_argument("--data", required=True, help="folder of demo files")
    c.add_argument("--frames", type=int, default=16, help="frames kept per demo")
    c.add_argument("--out", required=True, help="folder for the copies")
    f = sub.add_parser("fit", help="the policy's first moves against the demos' own")
    f.add_argument("--checkpoint", required=True, help="a save_pretrained folder or a training run folder")
    f.add_argument("--data", required=True, help="folder of demo files")
    f.add_argument("--steps", type=int, nargs="+", default=[0, 2, 5], help="time steps of the demos probed")
    f.add_argument("--demos", type=int, default=80, help="demos per step at most")
    f.add_argument("--out", default=None, help="write the result here as JSON")
    args = p.parse_args(argv)
    try:
        found = find_demo_files(args.data)
    except FileNotFoundError as e:
        sys.exit(str(e))
    if not found:
        sys.exit(f"--data: found no demo files under {args.data}, expected LIBERO-layout *_demo.hdf5 files")
    if args.command == "cut":
        if args.frames < 1:
            sys.exit(f"--frames: found {args.frames}, expected >= 1")
        print(f"{cut(args.data, args.frames, Path(args.out))} demos cut to {args.frames} frames in {args.out}")
        return 0
    from grids_vla.policy.checkpoint import load_policy_or_exit

    ckpt, policy = load_policy_or_exit(args.checkpoint)
    try:
        res = {"checkpoint": str(ckpt), "data": args.data, "steps": fit(policy, args.data, args.steps, args.demos)}
    except ValueError as e:
        sys.exit(str(e))
    print(write_json(res, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
