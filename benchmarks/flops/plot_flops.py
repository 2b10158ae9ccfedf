"""Plot FLOPs vs K for the five VLAs (full accounting), with the zero-visual-token limit as a line.

Usage: python benchmarks/flops/plot_flops.py [--out benchmarks/flops/flops_vs_k.png] [--json PATH]
Each model uses its default cameras and prompt length (see ``grids_vla.flops.counter.model_flops``);
the x axis is GridS tokens per camera, the rightmost point of each panel is the dense model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grids_vla.flops import MODELS, flops_table

KS = (64, 16, 4, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("flops_vs_k.png")))
    parser.add_argument("--json", default=None, help="also write every table as JSON here")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


if __name__ == "__main__":
    main()
