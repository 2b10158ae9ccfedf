"""Scripted-expert success per task, physics only, from the official init states 0..N-1 (what a policy is scored on).

Usage: python benchmarks/expert/expert_success.py --suite libero_goal --episodes 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

from grids_vla.envs.libero.expert import goal_predicates, rollout, unsupported_goals
from grids_vla.envs.libero.factory import make_env, num_tasks
from grids_vla.envs.libero.suites import MAX_STEPS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", required=True)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    rows = []
    for t in range(num_tasks(args.suite)):
        env = make_env(args.suite, t, render=False)
        row = {"task_id": t, "instruction": env.instruction, "goal": goal_predicates(env), "episodes": 0, "success": 0}
        if unsupported_goals(env):
            row["unsupported"] = unsupported_goals(env)
        else:
            t0 = time.time()
            for i in range(args.episodes):
                env.reset(i)
                r = rollout(env, MAX_STEPS[args.suite])
                row["episodes"] += 1
                row["success"] += int(r.success)
            row["s_per_episode"] = round((time.time() - t0) / args.episodes, 2)
        env.close()
        print(row, flush=True)
        rows.append(row)
    with open(args.json, "w") as f:
        json.dump({"suite": args.suite, "init_states": f"0..{args.episodes - 1}", "tasks": rows}, f, indent=1)


if __name__ == "__main__":
    main()
