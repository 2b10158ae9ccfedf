"""Draw benchmarks/so101/scenes.png: per task, four in-distribution scenes, four OOD scenes (front camera) and the
wrist camera at four moments of an expert episode, 128 px.

    OMP_NUM_THREADS=1 python benchmarks/so101/scenes_figure.py
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.expert import rollout
from grids_vla.envs.so101.scene import TASKS, ood_scenes


def main() -> None:
    rows = []
    for task in TASKS:
        env = SO101Env(task)
        ids = [env.reset(seed=s)["front"] for s in range(4)]
        ood = [env.reset(scene=ood_scenes(task)[i])["front"] for i in (1, 2, 5, 9)]
        env.reset(seed=0)
        r = rollout(env)
        wrist = [r.obs["wrist"][i] for i in np.linspace(0, r.steps - 1, 4).astype(int)]
        rows.append(np.concatenate(ids + ood + wrist, axis=1))
        env.close()
    out = Path(__file__).with_name("scenes.png")
    iio.imwrite(out, np.concatenate(rows, axis=0))
    print(out)


if __name__ == "__main__":
    main()
