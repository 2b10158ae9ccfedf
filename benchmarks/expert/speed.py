"""Control steps per second of a LIBERO env: physics only, and with 2 cameras with 4x MSAA on / off.

Usage: OMP_NUM_THREADS=1 python benchmarks/expert/speed.py --suite libero_object --task 0 --size 128 --steps 60
Also reports the mean |difference| between the MSAA-on and MSAA-off agentview images of the same state.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from grids_vla.envs.libero.factory import make_env


def rate(env, steps: int) -> float:
    env.reset(0)
    a = np.zeros(7)
    a[6] = -1.0
    env.step(a)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(a)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="libero_object")
    ap.add_argument("--task", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    out = {"suite": args.suite, "task": args.task, "size": args.size}
    env = make_env(args.suite, args.task, render=False)
    out["physics_only_steps_per_s"] = round(rate(env, args.steps * 3), 1)
    env.close()
    imgs = {}
    for msaa in (True, False):
        env = make_env(args.suite, args.task, image_size=args.size, msaa=msaa)
        out[f"images_msaa_{'on' if msaa else 'off'}_steps_per_s"] = round(rate(env, args.steps), 2)
        imgs[msaa] = env.reset(0)["agentview"].astype(np.float64)
        env.close()
    out["msaa_on_vs_off_mean_abs_diff_0_255"] = round(float(np.abs(imgs[True] - imgs[False]).mean()), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
