"""Plot FLOPs vs K for the five VLAs (full accounting), with the zero-visual-token limit as a line.

Usage: python benchmarks/flops/plot_flops.py [--what k|layer] [--out PATH] [--json PATH]
Each model uses its default cameras and prompt length (see ``grids_vla.flops.counter.model_flops``).
``--what k`` (default, ``flops_vs_k.png``): the x axis is GridS tokens per camera, the rightmost point of
each panel is the dense model. ``--what layer`` (``reduction_vs_layer.png``): GridS inside the vision
encoder, the reduction vs dense against the layer L where it resamples (every L from 0 to the depth),
for K = 16 and 4, with the free-encoder bound at each K and the zero-visual-token row as lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grids_vla.flops import MODELS, flops_table

KS = (64, 16, 4, 1)
LAYER_KS = (16, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("k", "layer"), default="k", help="FLOPs vs K, or reduction vs layer L")
    parser.add_argument("--out", default=None, help="default: flops_vs_k.png / reduction_vs_layer.png here")
    parser.add_argument("--json", default=None, help="also write every table as JSON here")
    args = parser.parse_args()
    if args.out is None:
        name = "flops_vs_k.png" if args.what == "k" else "reduction_vs_layer.png"
        args.out = str(Path(__file__).with_name(name))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.what == "layer":
        plot_layers(plt, args.out, args.json)
        return

    tables = {}
    fig, axes = plt.subplots(1, len(MODELS), figsize=(4 * len(MODELS), 3.6))
    for ax, (name, cfg) in zip(axes, MODELS.items()):
        ks = [k for k in KS if k < cfg.tokens_per_camera]
        rows = flops_table(name, ks)
        tables[name] = rows
        points = [(r["k"] or cfg.tokens_per_camera, r["total"] / 1e9) for r in rows if r["label"] != "limit"]
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, "o-", label="total (full)")
        vision = (rows[0]["components"]["vision"] + rows[0]["components"]["projector"]) / 1e9
        ax.axhline(rows[-1]["total"] / 1e9, color="tab:red", ls="--", label="limit: 0 visual tokens")
        ax.axhline(vision, color="tab:gray", ls=":", label="vision encoder + projector")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_ylim(bottom=0)
        ax.set_title(f"{name} ({rows[0]['cameras']} cam, prompt {rows[0]['prompt_tokens']})", fontsize=10)
        ax.set_xlabel("GridS tokens per camera (right: dense)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GFLOPs per inference call (batch 1)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(tables, indent=2))


def plot_layers(plt, out: str, json_path: str | None) -> None:
    """Reduction vs dense against the encoder layer where GridS resamples, one panel per model."""
    tables = {}
    fig, axes = plt.subplots(1, len(MODELS), figsize=(4 * len(MODELS), 3.6))
    for ax, name in zip(axes, MODELS):
        depth = max(e.layers for e in MODELS[name].encoders)
        rows = flops_table(name, LAYER_KS, after_layers=range(depth + 1))
        tables[name] = rows
        for k, color in zip(LAYER_KS, ("tab:blue", "tab:orange")):
            placed = [r for r in rows if r["k"] == k and r["bound"] is None]
            points = sorted((r["after_layer"], 100 * r["reduction"]) for r in placed)
            xs, ys = zip(*points)
            ax.plot(xs, ys, ".-", color=color, label=f"K={k}")
            free = next(r for r in rows if r["k"] == k and r["bound"] == "free-encoder")
            ax.axhline(100 * free["reduction"], color=color, ls="--", lw=1, label=f"free encoder, K={k}")
        ax.axhline(100 * rows[-1]["reduction"], color="tab:red", ls=":", label="zero visual tokens")
        ax.set_xlim(0, depth)
        ax.set_ylim(0, 100)
        ax.set_title(f"{name} ({rows[0]['cameras']} cam, prompt {rows[0]['prompt_tokens']})", fontsize=10)
        ax.set_xlabel(f"GridS before encoder layer L (of {depth})")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("FLOPs reduction vs dense (%, full)")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    if json_path:
        Path(json_path).write_text(json.dumps(tables, indent=2))


if __name__ == "__main__":
    main()
