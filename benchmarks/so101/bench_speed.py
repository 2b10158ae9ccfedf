"""Env steps per second of the SO-101 env with both cameras (front + wrist) at 128 px, on one CPU core.

    OMP_NUM_THREADS=1 python benchmarks/so101/bench_speed.py --steps 300             # fast settings (default)
    OMP_NUM_THREADS=1 python benchmarks/so101/bench_speed.py --steps 4 --full        # the package's render settings

The process is pinned to one core and Mesa's llvmpipe renders in the calling thread (``LP_NUM_THREADS=0``), so the CPU
time is one core's. Reported: steps per CPU second (the process's own time, what one free core would do) and per
wall second (lower when other jobs share the core), split into physics + IK and rendering. The expert drives the arm
through whole episodes (scene build and reset excluded from the timing).
"""

from __future__ import annotations

import os

os.environ.setdefault("LP_NUM_THREADS", "0")
os.environ.setdefault("MUJOCO_GL", "egl")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from grids_vla.envs.so101.env import SO101Env  # noqa: E402
from grids_vla.envs.so101.expert import Expert  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--task", default="pick_place_bowl")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--full", action="store_true", help="the package's settings: 8x MSAA, shadows, full meshes")
    ap.add_argument("--core", type=int, default=None, help="pin to this core (default: the first allowed one)")
    args = ap.parse_args()
    core = args.core if args.core is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    env = SO101Env(args.task, image_size=args.image_size, fast=not args.full)
    physics = SO101Env(args.task, cameras=(), fast=not args.full)
    env.reset(seed=0)
    env.observe()  # the renderer's context is made outside the timing
    totals = {"steps": 0, "cpu": 0.0, "wall": 0.0, "physics_cpu": 0.0}
    seed = 0
    while totals["steps"] < args.steps:
        env.reset(seed=seed)
        physics.reset(seed=seed)
        expert, expert2 = Expert(), Expert()
        for _ in range(100):
            if totals["steps"] >= args.steps or expert.done:
                break
            c0, w0 = time.process_time(), time.perf_counter()
            env.step(expert.act(env))  # physics + IK + both cameras
            totals["cpu"] += time.process_time() - c0
            totals["wall"] += time.perf_counter() - w0
            c0 = time.process_time()
            physics.step(expert2.act(physics))  # the same step without rendering
            totals["physics_cpu"] += time.process_time() - c0
            totals["steps"] += 1
        seed += 1
    n = totals["steps"]
    out = {"settings": "package defaults (8x MSAA, shadows, full meshes)" if args.full else "fast", "task": args.task,
           "image_size": args.image_size, "cameras": list(env.cameras), "steps": n, "core": core,
           "steps_per_cpu_s": n / totals["cpu"], "steps_per_wall_s": n / totals["wall"],
           "physics_ms_per_step": 1000 * totals["physics_cpu"] / n,
           "render_ms_per_step": 1000 * (totals["cpu"] - totals["physics_cpu"]) / n}
    print(json.dumps(out, indent=2))
    env.close()


if __name__ == "__main__":
    main()
