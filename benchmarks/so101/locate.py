"""How fast can each vision stem learn where the cube is? Supervised, on SO-101 first frames.

Behaviour cloning asks the encoder to learn the cube's position from a weak signal (the actions); this asks the
easier question first, with the position itself as the target. Each stem of ``GridSVLAConfig.vision_stem`` gets the
compact policy's ViT (front camera only, its default sizes), its tokens averaged, and a two-layer head regressing
the target cube's table position (x, y, standardised), trained with AdamW at the policy's learning rate and batch.
Fitting scenes are demo scenes (``attempt_seed(0, task, i)``), held-out ones evaluation scenes (``2**32 + i``); every
``--every`` steps the held-out R^2 per axis is recorded. An encoder that cannot do this in a few thousand steps
cannot learn it from actions at the study's budget either.

    MUJOCO_GL=egl OMP_NUM_THREADS=2 python benchmarks/so101/locate.py --stems patch conv coordconv \\
        --steps 1000 --out benchmarks/so101/locate/locate.json
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from grids_vla._io import write_json
from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.generate import attempt_seed
from grids_vla.envs.so101.scene import TASKS, sample_scene
from grids_vla.experiments.evaluate_so101 import IN_SEED_BASE
from grids_vla.policy.configuration_grids_vla import VISION_STEMS, GridSVLAConfig
from grids_vla.policy.modeling_grids_vla import VisionEncoder


def render(task: str, seeds: list[int], image_size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Front-camera first frames in [-1, 1] ``(n, 3, S, S)`` and the target cube's table position ``(n, 2)``."""
    env = SO101Env(task, image_size=image_size, cameras=("front",))
    images, xy = [], []
    try:
        for s in seeds:
            scene = sample_scene(task, s)
            images.append(env.reset(scene=scene)["front"])
            xy.append(scene.target.xy)
    finally:
        env.close()
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x, np.asarray(xy, dtype=np.float32)


def r2(pred: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Coefficient of determination per column."""
    return [round(float(v), 3) for v in 1.0 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)]


def learn(stem: str, x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
          steps: int, every: int, batch: int, lr: float, seed: int) -> list[dict]:
    """Train one stem's encoder + head; the held-out R^2 curve."""
    cfg = GridSVLAConfig(cameras=("front",), image_size=x_fit.shape[-1], vision_stem=stem)
    torch.manual_seed(seed)
    enc = VisionEncoder(cfg)
    head = nn.Sequential(nn.Linear(cfg.vision_dim, 256), nn.GELU(), nn.Linear(256, 2))

    def predict(x: torch.Tensor) -> torch.Tensor:
        return head(enc(x[:, None])[:, 0].mean(1))

    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    curve, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_fit), (batch,), generator=gen)
        loss = F.mse_loss(predict(x_fit[idx]), y_fit[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                rx, ry = r2(torch.cat([predict(c) for c in x_test.split(100)]), y_test)
            curve.append({"step": step, "train_loss": round(loss.item(), 4), "r2_x": rx, "r2_y": ry,
                          "wall_s": round(time.perf_counter() - t0, 1)})
            print(f"{stem} step {step}: held-out R^2 x {rx} y {ry}", flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stems", nargs="+", default=list(VISION_STEMS), help=f"any of {list(VISION_STEMS)}")
    p.add_argument("--task", default="pick_place_bowl", choices=TASKS)
    p.add_argument("--fit", type=int, default=1500, help="demo scenes trained on")
    p.add_argument("--held-out", type=int, default=200, help="evaluation scenes scored on")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=250, help="score every N steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--out", default=None, help="write the curves here as JSON")
    args = p.parse_args(argv)
    bad = [s for s in args.stems if s not in VISION_STEMS]
    if bad:
        sys.exit(f"--stems: found {bad}, expected any of {list(VISION_STEMS)}")
    for flag, value, least in (("--fit", args.fit, 10), ("--held-out", args.held_out, 10), ("--steps", args.steps, 1),
                               ("--every", args.every, 1)):
        if value < least:
            sys.exit(f"{flag}: found {value}, expected >= {least}")
    x_fit, y_fit = render(args.task, [attempt_seed(0, args.task, i) for i in range(args.fit)], args.image_size)
    x_test, y_test = render(args.task, [IN_SEED_BASE + i for i in range(args.held_out)], args.image_size)
    mu, sd = y_fit.mean(0), y_fit.std(0)
    y_fit_n, y_test_n = (torch.from_numpy((y - mu) / sd) for y in (y_fit, y_test))
    res = {"task": args.task, "fit_scenes": args.fit, "held_out_scenes": args.held_out, "steps": args.steps,
           "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "image_size": args.image_size,
           "threads": torch.get_num_threads(), "label": "target cube's table position (x, y), standardised",
           "curves": {s: learn(s, x_fit, y_fit_n, x_test, y_test_n, args.steps, args.every, args.batch_size,
                               args.lr, args.seed) for s in args.stems}}
    text = write_json(res, args.out)
    if not args.out:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
