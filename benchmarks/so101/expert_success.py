"""Success rate of the SO-101 scripted expert: seeded in-distribution episodes and the 21 OOD scenes per task.

    OMP_NUM_THREADS=1 python benchmarks/so101/expert_success.py --episodes 50 --out benchmarks/so101/expert_success.json

Physics only (no rendering: images do not change the physics, see tests/test_so101.py). Episode ``i`` of a task
plays the scene of ``attempt_seed(0, task, i)``, the seeds ``grids-vla data so101 --seed 0`` uses.
"""

from __future__ import annotations

import argparse
import json
import time

from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.expert import rollout
from grids_vla.envs.so101.generate import attempt_seed
from grids_vla.envs.so101.scene import TASKS, ood_scenes, sample_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    results = {}
    for task in args.tasks:
        env = SO101Env(task, cameras=())
        for split in ("id", "ood"):
            scenes = ([sample_scene(task, attempt_seed(0, task, i)) for i in range(args.episodes)] if split == "id"
                      else ood_scenes(task))
            ok, steps, failed, t0 = 0, 0, [], time.process_time()
            for i, scene in enumerate(scenes):
                env.reset(scene=scene)
                r = rollout(env, record=False)
                ok += r.success
                steps += r.steps
                if not r.success:
                    failed.append(i)
            results[f"{task}/{split}"] = {"success": ok, "episodes": len(scenes), "rate": ok / len(scenes),
                                          "mean_steps": steps / len(scenes), "failed": failed,
                                          "cpu_s_per_step": (time.process_time() - t0) / steps}
            print(f"{task:16s} {split:3s} {ok}/{len(scenes)} ({100 * ok / len(scenes):.1f} %), "
                  f"{steps / len(scenes):.1f} steps per episode, failed: {failed}", flush=True)
        env.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
