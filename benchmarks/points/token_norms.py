"""Do a checkpoint's points sit on the encoder's high-norm tokens?

A ViT can keep global information in a few tokens of empty background, whose output norm stands out from the rest;
points that read the encoder's output may go there instead of to the objects. For each camera this reads the
features the reducer resamples on demo frames, z-scores every token's norm within its frame, and reports the mean
z-score map (its top cells), the mean z-score at the cell nearest each point and the share of points on the top
``--top`` fraction of their frame's cells (a point placed at random would give about ``--top``). For the attention
point head it also reports how sharp its maps are: the mean entropy of a point's attention over the cells (nats; a
uniform map has ``log(H*W)``) and the mean largest weight. A soft-argmax over a spread map lands near the mean of
the cells it spreads over, whatever the image shows.

    OMP_NUM_THREADS=1 python benchmarks/points/token_norms.py --checkpoint runs/so101_run/final \\
        --data runs/so101/data --out token_norms.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from grids_vla._io import write_json
from grids_vla.sampling import coords_to_index_space


def norm_report(feats: Tensor, coords: Tensor | None, grid: tuple[int, int], cameras: tuple[str, ...],
                top: float = 0.1, align_corners: bool = True) -> dict[str, Any]:
    """``feats`` ``(B, cams, H*W, C)`` and ``coords`` ``(B, cams, K, 2)`` (``x, y`` in ``[0, 1]``, or ``None`` for a
    reducer without points) -> per camera: ``top_cells`` (row, column, mean z of the 8 highest cells), and with
    points ``points_mean_z`` and ``points_on_top`` (share of points on their frame's top ``top`` cells)."""
    h, w = grid
    norms = feats.float().norm(dim=-1)  # (B, cams, HW)
    z = (norms - norms.mean(-1, keepdim=True)) / norms.std(-1, keepdim=True).clamp_min(1e-12)
    out: dict[str, Any] = {}
    for ci, cam in enumerate(cameras):
        zc = z[:, ci]
        zmap = zc.mean(0)
        best = torch.topk(zmap, min(8, zmap.numel()))
        rep: dict[str, Any] = {"frames": int(zc.shape[0]),
                               "top_cells": [[int(i) // w, int(i) % w, round(float(v), 3)]
                                             for v, i in zip(best.values, best.indices, strict=True)]}
        if coords is not None:
            uv = coords_to_index_space(coords[:, ci].float(), grid, align_corners).round().long()
            cell = uv[..., 1] * w + uv[..., 0]  # (B, K): row * W + column
            at = torch.gather(zc, 1, cell)
            cut = torch.quantile(zc, 1.0 - top, dim=1, keepdim=True)
            rep["points_mean_z"] = round(float(at.mean()), 4)
            rep["points_on_top"] = round(float((at >= cut).float().mean()), 4)
        out[cam] = rep
    return out


def demo_batch(data: str, policy: Any, demos: int, times: tuple[int, ...]) -> dict[str, Any]:
    """Frames ``times`` of the first ``demos`` demos of every task file under ``data``, as a training batch (which
    the policy reads as its input)."""
    from torch.utils.data import default_collate

    from grids_vla.envs.libero.dataset import LiberoDemoDataset, find_demo_files

    ds = LiberoDemoDataset(find_demo_files(data), chunk=policy.config.chunk)
    idx = [i for i, (_, di, t) in enumerate(ds.index) if di < demos and t in times]
    if not idx:
        raise ValueError(f"no frame {list(times)} in the first {demos} demos of the files")
    return default_collate([ds[i] for i in idx])


def measure(policy: Any, batch: dict[str, Any], top: float = 0.1) -> dict[str, Any]:
    """Run ``policy`` on ``batch`` and report :func:`norm_report` on the features its reducer read."""
    seen: dict[str, Any] = {}
    reduce = policy._reduce

    def spy(feats: Tensor, lang: Tensor, look: Tensor | None = None) -> Any:
        out = reduce(feats, lang, look)
        seen["feats"], seen["coords"] = feats.detach(), None if out[1] is None else out[1].detach()
        seen["aux"] = out[2]
        return out

    policy._reduce = spy
    try:
        with torch.no_grad():
            policy.predict_action(batch)
    finally:
        del policy._reduce  # back to the class's method
    sampler = getattr(policy.reducer, "sampler", None)
    align = getattr(sampler, "align_corners", True)
    rep = norm_report(seen["feats"], seen["coords"], policy.config.grid, policy.config.cameras, top, align)
    for cam, r in rep.items():
        if "attention" in seen["aux"].get(cam, {}):
            r.update(attention_report(seen["aux"][cam]["attention"]))
    return rep


def attention_report(attention: Tensor) -> dict[str, float]:
    """``(B, K, N)`` attention maps of one camera's points -> ``attention_entropy`` (mean over frames and points,
    nats), ``uniform_entropy`` (``log N``) and ``attention_peak`` (mean largest weight)."""
    a = attention.float()
    entropy = -(a * a.clamp_min(1e-12).log()).sum(-1)
    return {"attention_entropy": round(float(entropy.mean()), 4),
            "uniform_entropy": round(float(torch.tensor(float(a.shape[-1])).log()), 4),
            "attention_peak": round(float(a.amax(-1).mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a save_pretrained folder or a training run folder")
    p.add_argument("--data", required=True, help="folder of *_demo.hdf5 task files (LIBERO or SO-101 layout)")
    p.add_argument("--demos", type=int, default=4, help="first N demos of each task file")
    p.add_argument("--times", type=int, nargs="+", default=[0, 20], help="frames of each demo")
    p.add_argument("--top", type=float, default=0.1, help="the high-norm cells: this top fraction of a frame's")
    p.add_argument("--out", default=None, help="also write the report here (JSON)")
    args = p.parse_args(argv)
    if not 0 < args.top < 1:
        sys.exit(f"--top: found {args.top}, expected a fraction in (0, 1)")
    torch.set_num_threads(1)
    from grids_vla.policy.checkpoint import load_policy_or_exit

    ckpt, policy = load_policy_or_exit(args.checkpoint)
    try:
        batch = demo_batch(args.data, policy, args.demos, tuple(args.times))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"--data {args.data}: {e}")
    print(write_json({"checkpoint": str(ckpt), "data": args.data, "top": args.top,
                      "cameras": measure(policy, batch, args.top)}, Path(args.out) if args.out else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
