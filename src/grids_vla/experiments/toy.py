"""``grids-vla toy``: a few-minute, fully offline check that GridS learns where to look (no simulator needed).

A synthetic "reach for the <colour> block" task: each 64 x 64 image holds a few coloured squares, the
instruction names one colour, and the model must output that square's centre. Every reducer gets the
same tiny patch encoder (16 x 16 tokens), the same downstream transformer and the same training
budget, so the table compares only how the 256 visual tokens are reduced. It is a toy: it shows the
mechanism (learned, instruction-conditioned sampling points) and the throughput effect of fewer
tokens, not robot success rates.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._cli_fields import add_dataclass_fields, picked_fields
from .._io import atomic_write_text
from ..reducers import create_reducer

PALETTE = torch.tensor(
    [[1.0, 0.1, 0.1], [0.1, 0.9, 0.1], [0.2, 0.3, 1.0], [1.0, 0.9, 0.1], [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]]
)
# Demo names for GridS settings: the paper's pooled predictor, our soft-argmax one, and the fixed anchors.
GRIDS_VARIANTS = {
    "grids": {"predictor": "pooled"},
    "grids-attn": {"predictor": "attention"},
    "grids-fixed": {"coords": "fixed-grid"},
}
COLOUR_NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan"]
IMAGE = 64
PATCH = 4
BLOCK = 6


@dataclass
class ToyConfig:
    """Settings of the toy run; the CLI flags mirror these fields."""

    out: str = "runs/toy"
    reducers: list[str] = field(
        default_factory=lambda: ["dense", "grids", "grids-attn", "grids-fixed", "topk"]
    )
    k: int = 4
    steps: int = 400
    batch_size: int = 64
    dim: int = 64
    objects: int = 4
    lr: float = 2e-3
    eval_size: int = 512
    seed: int = 0
    threads: int = 2
    success_radius: float = 0.05


def make_batch(n: int, objects: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Images ``(n, 3, 64, 64)``, instruction colour ids ``(n,)`` and target centres ``(n, 2)`` in [0, 1]."""
    colours = torch.stack([torch.randperm(len(PALETTE), generator=generator)[:objects] for _ in range(n)])
    cells = IMAGE // 8  # one object per 8 x 8 cell, so squares never overlap
    slots = torch.stack([torch.randperm(cells * cells, generator=generator)[:objects] for _ in range(n)])
    jitter = torch.randint(0, 8 - BLOCK + 1, (n, objects, 2), generator=generator)
    top_left = torch.stack([slots % cells, slots // cells], dim=-1) * 8 + jitter  # (n, objects, (x, y))
    images = 0.05 * torch.rand(n, 3, IMAGE, IMAGE, generator=generator)
    ys = torch.arange(IMAGE).view(1, 1, IMAGE, 1)
    xs = torch.arange(IMAGE).view(1, 1, 1, IMAGE)
    for j in range(objects):
        x0 = top_left[:, j, 0].view(n, 1, 1, 1)
        y0 = top_left[:, j, 1].view(n, 1, 1, 1)
        mask = (xs >= x0) & (xs < x0 + BLOCK) & (ys >= y0) & (ys < y0 + BLOCK)
        images = torch.where(mask, PALETTE[colours[:, j]].view(n, 3, 1, 1), images)
    pick = torch.randint(0, objects, (n,), generator=generator)
    target = colours[torch.arange(n), pick]
    centre = (top_left[torch.arange(n), pick].float() + BLOCK / 2) / IMAGE
    return images, target, centre


class ToyPolicy(nn.Module):
    """Patch encoder -> token reducer -> one transformer layer over [instruction, visual] -> (x, y)."""

    def __init__(self, reducer: str, k: int, dim: int) -> None:
        super().__init__()
        grid = IMAGE // PATCH
        self.encoder = nn.Sequential(
            nn.Conv2d(5, dim, PATCH, stride=PATCH), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1), nn.GELU()
        )
        self.pos = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.context = nn.Conv2d(dim, dim, 3, padding=1)
        self.instruction = nn.Embedding(len(PALETTE), dim)
        kwargs: dict = {"grid_size": (grid, grid)}
        if reducer in GRIDS_VARIANTS:
            kwargs.update(GRIDS_VARIANTS[reducer])
            if kwargs.get("coords", "predicted") == "predicted":
                kwargs["cond_dim"] = dim  # the instruction conditions where to look
            reducer = "grids"
        self.reducer = create_reducer(reducer, dim, None if reducer == "dense" else k, **kwargs)
        self.block = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2))

    def forward(self, images: Tensor, instruction: Tensor) -> tuple[Tensor, Tensor | None]:
        b = images.shape[0]
        # Pixel coordinates as two extra input channels (CoordConv), so features can tie colour to place.
        ramp = torch.linspace(0, 1, IMAGE, device=images.device, dtype=images.dtype)
        xy = torch.stack([ramp.view(1, -1).expand(IMAGE, -1), ramp.view(-1, 1).expand(-1, IMAGE)])
        fmap = self.encoder(torch.cat([images, xy.expand(b, -1, -1, -1)], dim=1)) + self.pos
        fmap = fmap + F.gelu(self.context(fmap))
        text = self.instruction(instruction)
        cond = text if self.reducer.accepts_cond else None
        tokens, coords, _ = self.reducer(fmap, cond=cond)
        seq = self.block(torch.cat([text.unsqueeze(1), tokens], dim=1))
        return torch.sigmoid(self.head(seq[:, 0])), coords


def train_one(name: str, cfg: ToyConfig, eval_set: tuple[Tensor, Tensor, Tensor]) -> tuple[dict, ToyPolicy]:
    """Train one policy for ``cfg.steps`` and evaluate it on the fixed evaluation set."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model = ToyPolicy(name, cfg.k, cfg.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    model.train()
    train_time = 0.0
    for step in range(cfg.steps):
        images, target, centre = make_batch(cfg.batch_size, cfg.objects, gen)
        start = time.perf_counter()
        pred, _ = model(images, target)
        loss = F.l1_loss(pred, centre)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_time += time.perf_counter() - start
        if step % max(1, cfg.steps // 4) == 0 or step == cfg.steps - 1:
            print(f"  [{name}] step {step + 1}/{cfg.steps} loss {loss.item():.4f}", flush=True)
    model.eval()
    images, target, centre = eval_set
    with torch.no_grad():
        pred, _ = model(images, target)
        calls = min(20, len(images))
        start = time.perf_counter()
        for i in range(calls):
            model(images[i : i + 1], target[i : i + 1])
        latency_ms = (time.perf_counter() - start) / calls * 1000
    err = (pred - centre).norm(dim=-1)
    tokens = model.reducer.num_output_tokens((IMAGE // PATCH, IMAGE // PATCH))
    result = {
        "reducer": name,
        "tokens": tokens,
        "success": float((err < cfg.success_radius).float().mean()),
        "mean_error": float(err.mean()),
        "train_samples_per_s": cfg.steps * cfg.batch_size / train_time,
        "latency_ms_batch1": latency_ms,
        "final_loss": float(loss),
    }
    return result, model


def plot_points(models: dict[str, ToyPolicy], eval_set: tuple[Tensor, Tensor, Tensor], path: Path) -> bool:
    """Draw each model's sampling points over the first evaluation images (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..viz import draw_points

    images, target, centre = (t[:4] for t in eval_set)
    grid = (IMAGE // PATCH, IMAGE // PATCH)
    fig, axes = plt.subplots(len(models), 4, figsize=(8, 2.1 * len(models)), squeeze=False)
    for row, (name, model) in enumerate(models.items()):
        with torch.no_grad():
            pred, coords = model(images, target)
        for col in range(4):
            ax = axes[row][col]
            shown = coords[col] if coords is not None and coords.shape[1] <= 64 else torch.empty(0, 2)
            draw_points(ax, images[col], shown, grid, model.reducer.align_corners)
            ax.scatter(*centre[col].tolist(), marker="+", s=80, c="white")
            ax.scatter(*pred[col].tolist(), marker="x", s=60, c="orange")
            if col == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(f'"reach the {COLOUR_NAMES[int(target[col])]} block"', fontsize=8)
    fig.suptitle("circles: sampling points / patch centres kept; +: target; x: prediction", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def run_toy(cfg: ToyConfig) -> list[dict]:
    """Train and evaluate every reducer in ``cfg.reducers``; write report.md, results.json and points.png."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    eval_set = make_batch(cfg.eval_size, cfg.objects, torch.Generator().manual_seed(10_000 + cfg.seed))
    results, models = [], {}
    began = time.time()
    for i, name in enumerate(cfg.reducers):
        print(f"[{i + 1}/{len(cfg.reducers)}] training {name} ({time.time() - began:.0f}s elapsed)", flush=True)
        res, model = train_one(name, cfg, eval_set)
        results.append(res)
        models[name] = model
    dense = next((r for r in results if r["reducer"] == "dense"), None)
    lines = [
        "# GridS toy: synthetic 'reach for the <colour> block'",
        "",
        f"Setting: 64x64 images, {cfg.objects} coloured squares, 16x16 = 256 visual tokens, K = {cfg.k}, "
        f"{cfg.steps} steps x batch {cfg.batch_size}, seed {cfg.seed}, {cfg.threads} CPU threads. "
        f"Success = predicted centre within {cfg.success_radius:g} of the target (image fraction), "
        f"over {cfg.eval_size} held-out scenes.",
        "",
        "This is a toy task made to check the mechanism offline in a few minutes; it is not a robot benchmark. "
        f"Timings are wall-clock on this machine (1-minute load average {os.getloadavg()[0]:.1f} at the end of "
        "the run): with other jobs running they are noisy, so compare them only within one quiet run.",
        "",
        "| reducer | tokens | success | mean error | train samples/s | latency b=1 (ms) |"
        + (" train speed vs dense |" if dense else ""),
        "|---|---|---|---|---|---|" + ("---|" if dense else ""),
    ]
    for r in results:
        row = (
            f"| {r['reducer']} | {r['tokens']} | {r['success']:.1%} | {r['mean_error']:.3f} | "
            f"{r['train_samples_per_s']:.0f} | {r['latency_ms_batch1']:.2f} |"
        )
        if dense:
            row += f" {r['train_samples_per_s'] / dense['train_samples_per_s']:.2f}x |"
        lines.append(row)
    if plot_points(models, eval_set, out / "points.png"):
        lines += ["", "![sampling points](points.png)"]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "results.json", json.dumps({"config": asdict(cfg), "results": results}, indent=2))
    print("\n".join(lines[7:]))
    print(f"wrote {out / 'report.md'} in {time.time() - began:.0f}s")
    return results


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("toy", help="train GridS and its peers on a synthetic task (no simulator), write a report")
    add_dataclass_fields(parser, ToyConfig)
    parser.add_argument("--quick", action="store_true", help="a one-minute run: fewer steps and reducers")
    parser.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    cfg = ToyConfig(**picked_fields(args, ToyConfig))
    if args.quick:
        cfg.steps = min(cfg.steps, 150)
        cfg.reducers = [r for r in cfg.reducers if r in ("dense", "grids", "grids-attn")]
    if cfg.k < 1 or cfg.steps < 1:
        raise SystemExit(f"--k and --steps must be >= 1, got {cfg.k} and {cfg.steps}")
    run_toy(cfg)
    return 0


__all__ = ["ToyConfig", "ToyPolicy", "make_batch", "run_toy"]
