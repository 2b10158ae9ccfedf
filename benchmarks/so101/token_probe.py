"""Do an SO-101 policy's visual tokens hold where the cube is? A linear probe on the tokens its transformer reads.

``reach_probe.py`` asks whether the policy *acts* on the cube's position; this asks whether the position is *in* the
visual tokens it gets (after the reducer: K per camera for GridS, every token for dense). For each scene it renders
the first frame (the arm always in the same pose), runs the policy up to its token prefix and keeps the visual
tokens, flattened. A ridge regression (closed form, linear kernel; its penalty picked by 5-fold cross-validation on
the fitting scenes) maps them to the target cube's table position (x, y); the score is R^2 per axis on held-out
scenes. Fitting scenes are demo scenes (``attempt_seed(0, task, i)``), held-out ones evaluation scenes
(``2**32 + i``), as in ``reach_probe.py``. Two references come with every run: the same probe on 32 x 32
front-camera pixels (what a linear read of the raw image gives) and on the tokens of the same architecture freshly
initialised (seed 0), so a trained encoder can be told from a random one. For GridS the same probe also runs on the
points' coordinates alone (``points``; standardised, so a pattern that moves by a fraction of a pixel can still carry
the position; ``points_spread``: their mean standard deviation over the fitting scenes, in the reducer's [0, 1]
coordinates).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/so101/token_probe.py --checkpoint RUN/final \\
        --task pick_place_bowl --fit 300 --held-out 100 --out benchmarks/so101/pilot/NAME/token_probe.json

High R^2 on held-out scenes with a reach that ignores the cube means the position reaches the transformer and the
action head does not use it; low R^2 means the encoder or the reducer lose it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from grids_vla._io import write_json
from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.generate import attempt_seed
from grids_vla.envs.so101.scene import TASKS, sample_scene
from grids_vla.experiments.evaluate_so101 import IN_SEED_BASE, POLICY_CAMERAS, observation_to_batch
from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy

PENALTIES = tuple(10.0 ** e for e in range(-3, 6))


def render(task: str, seeds: list[int], image_size: int, cameras: tuple[str, ...]) -> tuple[list[dict], np.ndarray]:
    """First-frame batches (one per scene) and the target cube's table position ``(n, 2)``."""
    env = SO101Env(task, image_size=image_size, cameras=tuple(POLICY_CAMERAS[c] for c in cameras))
    batches, xy = [], []
    try:
        for s in seeds:
            scene = sample_scene(task, s)
            obs = env.reset(scene=scene)
            batches.append(observation_to_batch(obs, cameras, env.instruction))
            xy.append(scene.target.xy)
    finally:
        env.close()
    return batches, np.asarray(xy, dtype=np.float64)


@torch.no_grad()
def visual_tokens(policy: GridSVLAPolicy, batches: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """The visual part of the policy's token prefix for each batch, flattened: ``(n, cameras * tokens * dim)``, and
    the coordinates the reducer reports, ``(n, cameras * K * 2)`` (``None`` when it reports none)."""
    c = policy.config
    n_visual = len(c.cameras) * c.tokens_per_camera
    rows, points = [], []
    for b in batches:
        prefix, coords, _ = policy._prefix({cam: b[cam] for cam in c.cameras}, b["state"], b["instruction"])
        rows.append(prefix[0, 1:1 + n_visual].flatten().double().numpy())
        if coords is not None:
            points.append(coords[0].flatten().double().numpy())
    return np.stack(rows), (np.stack(points) if points else None)


def pixels(batches: list[dict], camera: str, side: int = 32) -> np.ndarray:
    """One camera's image, area-averaged to ``side x side``, flattened: ``(n, 3 * side * side)``."""
    ims = torch.cat([b[camera] for b in batches]).float() / 255.0
    return F.adaptive_avg_pool2d(ims, side).flatten(1).double().numpy()


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, ...]:
    """Dual-form ridge on standardised features: ``(low, high, mean, scale, weights, bias)``."""
    mean, scale = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / scale
    gram = z @ z.T
    alpha = np.linalg.solve(gram + penalty * len(z) * np.eye(len(z)), y - y.mean(0))
    return x.min(0), x.max(0), mean, scale, z.T @ alpha, y.mean(0)


def _predict(fit: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    """The fitted map on ``x`` clipped to the range each feature had where the probe was fitted: a point that sat
    still there (spread 1e-6) and jumps in a new scene would otherwise be thousands of standard deviations out and
    swamp the prediction; the probe asks what the fitted range says, not how a line extrapolates."""
    low, high, mean, scale, w, bias = fit
    return ((np.clip(x, low, high) - mean) / scale) @ w + bias


def r2(pred: np.ndarray, y: np.ndarray) -> list[float]:
    """Coefficient of determination per column."""
    return [round(float(1.0 - ((pred[:, i] - y[:, i]) ** 2).sum() / ((y[:, i] - y[:, i].mean()) ** 2).sum()), 3)
            for i in range(y.shape[1])]


def probe(x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, folds: int = 5) -> dict:
    """Ridge from features to positions: the penalty with the best mean cross-validated R^2 on the fitting set, then
    R^2 on the held-out set per axis."""
    idx = np.arange(len(x_fit)) % folds
    best, best_score = PENALTIES[0], -np.inf
    for pen in PENALTIES:
        scores = []
        for f in range(folds):
            tr, va = idx != f, idx == f
            scores.append(np.mean(r2(_predict(_ridge(x_fit[tr], y_fit[tr], pen), x_fit[va]), y_fit[va])))
        if np.mean(scores) > best_score:
            best, best_score = pen, float(np.mean(scores))
    fit = _ridge(x_fit, y_fit, best)
    x_r2, y_r2 = r2(_predict(fit, x_test), y_test)
    return {"r2_x": x_r2, "r2_y": y_r2, "cv_r2": round(best_score, 3), "penalty": best, "features": x_fit.shape[1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a save_pretrained folder or a training run folder")
    p.add_argument("--task", default="pick_place_bowl", choices=TASKS)
    p.add_argument("--fit", type=int, default=300, help="demo scenes the probe is fitted on")
    p.add_argument("--held-out", type=int, default=100, help="evaluation scenes it is scored on")
    p.add_argument("--out", default=None, help="write the result here as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from grids_vla.policy.checkpoint import load_policy_or_exit

    for flag, value in (("--fit", args.fit), ("--held-out", args.held_out)):
        if value < 10:
            sys.exit(f"{flag}: found {value}, expected >= 10 scenes")
    ckpt, policy = load_policy_or_exit(args.checkpoint)
    c = policy.config
    torch.manual_seed(0)
    fresh = GridSVLAPolicy(c).eval()
    fresh.load_state_dict({k: v for k, v in policy.state_dict().items() if "_mean" in k or "_std" in k},
                          strict=False)  # same normalisation, untrained weights
    fit_b, fit_y = render(args.task, [attempt_seed(0, args.task, i) for i in range(args.fit)], c.image_size,
                          c.cameras)
    test_b, test_y = render(args.task, [IN_SEED_BASE + i for i in range(args.held_out)], c.image_size, c.cameras)
    (tok_fit, pts_fit), (tok_test, pts_test) = visual_tokens(policy, fit_b), visual_tokens(policy, test_b)
    res = {"checkpoint": str(ckpt), "task": args.task, "fit_scenes": args.fit, "held_out_scenes": args.held_out,
           "label": "target cube's table position (x, y), m",
           "tokens": probe(tok_fit, fit_y, tok_test, test_y),
           "tokens_untrained": probe(visual_tokens(fresh, fit_b)[0], fit_y, visual_tokens(fresh, test_b)[0], test_y),
           "front_pixels_32": probe(pixels(fit_b, c.cameras[0]), fit_y, pixels(test_b, c.cameras[0]), test_y)}
    if c.reducer == "grids":  # the coordinates alone: do the points say where the cube is, however little they move?
        res["points"] = probe(pts_fit, fit_y, pts_test, test_y)
        res["points_spread"] = round(float(pts_fit.std(0).mean()), 6)
    print(write_json(res, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
