"""Does an SO-101 policy read where the cube is? Its first action chunk against the expert's first moves.

At the first step of an episode the arm is always in the same pose, so only the images tell where the cube is. For
each scene this plays the expert for ``--horizon`` steps and sums its ``[dx, dy]`` commands, asks the policy for its
first chunk from the same first observation and sums the same number of its actions, then reports per axis the
correlation of the two sums over the scenes and their mean absolute difference, on demo scenes (``attempt_seed(0,
task, i)``, what ``grids-vla data so101 --seed 0`` trained on) and on held-out evaluation scenes (``2**32 + i``). A
policy that reads the cube's position has a high correlation on both; one that plays the average reach has none.
``blind`` repeats it with both cameras grey.

``--after N`` probes later instead: the expert plays the first ``N`` steps, then the policy's chunk from that frame
is compared with the expert's next moves. Once the arm has started towards the cube its pose says where the cube is,
so a policy that copies the motion from its state (the "copycat" shortcut) follows the expert there even blind,
while at step 0 it cannot.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/so101/reach_probe.py --checkpoint RUN/final \\
        --task pick_place_bowl --scenes 20 --out benchmarks/so101/pilot/NAME/reach_probe.json

With ``--data`` it also reports the same correlation between the demos' own first frames and actions, the cube
found in the front image by its colour (a check that the demos carry the information).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from grids_vla._io import write_json
from grids_vla.envs.libero.dataset import find_demo_files, read_demo
from grids_vla.envs.so101.env import SO101Env
from grids_vla.envs.so101.expert import Expert
from grids_vla.envs.so101.generate import attempt_seed
from grids_vla.envs.so101.scene import COLOURS, TASKS, sample_scene
from grids_vla.experiments.evaluate_so101 import IN_SEED_BASE, POLICY_CAMERAS, observation_to_batch
from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r, or ``None`` where one side does not vary (a policy that answers every scene alike)."""
    if a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


def _stats(policy_sums: np.ndarray, expert_sums: np.ndarray) -> dict:
    return {axis: {"corr": _corr(policy_sums[:, i], expert_sums[:, i]),
                   "mean_abs_diff": round(float(np.abs(policy_sums[:, i] - expert_sums[:, i]).mean()), 3),
                   "expert_std": round(float(expert_sums[:, i].std()), 3)}
            for i, axis in enumerate(("x", "y"))}


def probe(policy: GridSVLAPolicy, task: str, seeds: list[int], horizon: int, after: int = 0) -> dict:
    cams = policy.config.cameras
    env = SO101Env(task, image_size=policy.config.image_size, cameras=tuple(POLICY_CAMERAS[c] for c in cams))
    pol, blind, exp = [], [], []

    def first_moves(batch: dict) -> np.ndarray:
        chunk = policy.predict_action(batch, generator=torch.Generator().manual_seed(0))[0]
        return chunk[:horizon, :2].double().clamp(-1, 1).sum(0).numpy()

    try:
        for s in seeds:
            obs, expert = env.reset(scene=sample_scene(task, s)), Expert()
            for _ in range(after):
                obs, _ = env.step(expert.act(env))
            pol.append(first_moves(observation_to_batch(obs, cams, env.instruction)))
            blind.append(first_moves(observation_to_batch(obs, cams, env.instruction, blind=cams)))
            acts = []
            for _ in range(horizon):
                a = expert.act(env)
                acts.append(a[:2])
                env.step(a)
            exp.append(np.sum(acts, 0))
    finally:
        env.close()
    return {**_stats(np.asarray(pol), np.asarray(exp)), "blind": _stats(np.asarray(blind), np.asarray(exp))}


def target_colour(instruction: str) -> str:
    """The colour of the cube to move: the first one the instruction names ("stack the red cube on the blue cube")."""
    named = [(instruction.index(f" {c} cube"), c) for c in COLOURS if f" {c} cube" in instruction]
    if not named:
        raise ValueError(f"instruction {instruction!r} names no cube colour of {list(COLOURS)}")
    return min(named)[1]


def data_check(data: str, demos_per_file: int, horizon: int) -> dict:
    """The demos' first front frame (the cube's pixel centroid, found by colour) against their first actions."""
    import h5py

    cols, acts = [], []
    for path in find_demo_files(data):
        with h5py.File(path, "r") as f:
            n = sum(1 for k in f["data"] if k.startswith("demo_"))
        for i in range(min(n, demos_per_file)):
            d = read_demo(path, i, upright=True)
            try:
                colour = target_colour(str(d["instruction"]))
            except ValueError as e:
                raise ValueError(f"{path} demo_{i}: {e}") from None
            img = d["agentview_rgb"][0].astype(float)
            mask = np.linalg.norm(img - 255 * np.asarray(COLOURS[colour]), axis=-1) < 80
            if mask.any():
                rows, columns = np.nonzero(mask)
                cols.append((rows.mean(), columns.mean()))
                acts.append(d["actions"][:horizon, :2].sum(0))
    c, a = np.asarray(cols).reshape(-1, 2), np.asarray(acts).reshape(-1, 2)
    if len(c) < 3:
        return {"demos": len(c)}  # too few for a correlation
    return {"demos": len(c), "corr_row_x": round(float(np.corrcoef(c[:, 0], a[:, 0])[0, 1]), 3),
            "corr_column_y": round(float(np.corrcoef(c[:, 1], a[:, 1])[0, 1]), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a save_pretrained folder or a training run folder")
    p.add_argument("--task", default="pick_place_bowl", choices=TASKS)
    p.add_argument("--scenes", type=int, default=20, help="scenes of each set (demo, held-out)")
    p.add_argument("--horizon", type=int, default=8, help="first actions summed (the chunk's length at most)")
    p.add_argument("--after", type=int, default=0, help="expert steps played before the probed frame")
    p.add_argument("--data", default=None, help="the task's demo folder, for the data check")
    p.add_argument("--out", default=None, help="write the result here as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from grids_vla.policy.checkpoint import load_policy_or_exit

    ckpt, policy = load_policy_or_exit(args.checkpoint)
    if not 1 <= args.horizon <= policy.config.chunk:
        sys.exit(f"--horizon: found {args.horizon}, expected 1 to the policy's chunk ({policy.config.chunk})")
    if args.after < 0:
        sys.exit(f"--after: found {args.after}, expected >= 0 (expert steps before the probed frame)")
    if args.scenes < 3:
        sys.exit(f"--scenes: found {args.scenes}, expected >= 3 (a correlation over the scenes)")
    res = {"checkpoint": str(ckpt), "task": args.task, "horizon": args.horizon, "after": args.after,
           "scenes": args.scenes,
           "demo_scenes": probe(policy, args.task, [attempt_seed(0, args.task, i) for i in range(args.scenes)],
                                args.horizon, args.after),
           "held_out_scenes": probe(policy, args.task, [IN_SEED_BASE + i for i in range(args.scenes)], args.horizon,
                                    args.after)}
    if args.data:
        try:
            res["data"] = data_check(args.data, 15, args.horizon)
        except ValueError as e:
            sys.exit(f"--data {args.data}: {e}")
    print(write_json(res, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
