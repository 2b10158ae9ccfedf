"""Success-rate comparison on LIBERO: dense vs GridS-16 (and any other variant), same budget, several seeds.

Every (variant, seed) run trains with ``grids-vla train`` settings into ``OUT/runs/<variant>_s<seed>`` and evaluates
from the official init states into ``.../eval``; both phases resume where a stopped run left off, so the script can
be re-run until it is complete. ``--device`` says where runs train (default: a CUDA device when torch sees one);
evaluation plays the simulator and the policy on CPUs, ``--eval-workers`` processes at a time. ``--phase train`` only
trains (e.g. on a GPU machine that lacks the simulator's packages; copy the run folders back and evaluate
elsewhere), ``--phase eval`` only evaluates existing checkpoints, ``--phase report`` only writes ``OUT/success.md`` /
``success.json`` / ``success.png`` from what exists.

``--archive DIR`` (e.g. ``benchmarks/libero/success``) keeps each finished run's evaluation, episode list, metrics
and settings in ``DIR/<variant>_s<seed>/`` (small files, meant to be committed), and the report falls back to them for
runs whose folder is gone: a comparison can be finished across machines or sessions that do not share ``OUT``. An
archived run is only used when its settings are the ones asked for and it was trained on the same demo set (its
``data.json`` fingerprint: the same scenes, or the same actions where the demos record no scene seeds); otherwise the
script stops with the difference. The demos are regenerated on every fresh machine, and a regeneration of the same
command can differ from the last by a few frames (the expert's floating point), so runs pool across regenerations of
one scene set; the report lists each regeneration's actions digest and its runs.

    OMP_NUM_THREADS=2 python benchmarks/libero/success.py --data runs/libero/data/libero_object \\
        --suite libero_object --seeds 0 1 --steps 3000 --batch-size 32 --episodes-per-task 10 --out runs/success

``--plan FILE`` runs a whole study instead (``benchmarks/libero/study.json``): the file names the suite, data,
archive and protocol, and lists stages in order of value, each a set of variants x seeds, optionally kept (the final
checkpoint committed beside the results) and evaluated out of distribution (``ood``: perturbation specs, each
evaluated on ``ood_episodes_per_task`` episodes per task; ``blind`` shows the policy grey images instead of a changed
scene; ``liberoplus:`` specs run in ``--liberoplus-python``'s
environment on a fixed spread of ``ood_plus_per_task`` variant tasks per base task). Every run is evaluated from
``final/``, its last checkpoint stored in float16 (what the archive keeps), so a kept checkpoint re-evaluates to the
same episodes.

A plan with ``"env": "so101"`` (``benchmarks/so101/study.json``) names ``tasks`` instead of a suite: one policy is
trained on the SO-101 demos of all of them, and every run is evaluated per task on ``episodes_per_task`` held-out
in-distribution scenes (``eval``) and on the first ``ood_episodes_per_task`` OOD scenes (``ood/ood_scenes``), in the
same files and archive layout as a LIBERO run (see the SO-101 section below).

A plan may also carry ``"train"`` (``{field: value}`` for some ``grids-vla train`` options, e.g. ``start_frames``) and
``"model"`` (policy fields added to every variant's preset, e.g. ``vision_stem``): part of the protocol, applied to
every run and checked against archived runs like the rest.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

import torch

from grids_vla.envs.libero.dataset import demo_fingerprint, demo_set
from grids_vla.envs.so101.scene import N_OOD, TASKS
from grids_vla.policy.configuration_grids_vla import PRESETS, GridSVLAConfig
from grids_vla.policy.evaluation import (
    EPISODES_NAME,
    EvalConfig,
    evaluate,
    load_episodes,
    mcnemar_exact,
    paired_outcomes,
    to_markdown,
    wilson_interval,
)
from grids_vla.policy.modeling_grids_vla import GridSVLAPolicy, atomic_write_text
from grids_vla.policy.training import DEVICES, TrainConfig, data_image_size, find_demo_files, latest_checkpoint, train


def run_dir(args: argparse.Namespace, variant: str, seed: int) -> Path:
    """A run's working folder: ``OUT/runs/<variant>_s<seed>``."""
    return Path(args.out) / "runs" / f"{variant}_s{seed}"


def train_run(args: argparse.Namespace, variant: str, seed: int) -> Path:
    out = run_dir(args, variant, seed)
    done = latest_checkpoint(out)
    if done is not None and done.name == f"step_{args.steps:07d}":
        return done
    cfg = TrainConfig(data=args.data, out=str(out), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      warmup_steps=args.warmup_steps, seed=seed, num_workers=args.num_workers,
                      save_every=args.save_every, log_every=50, resume="latest" if done is not None else None,
                      device=args.device,
                      overwrite=done is None,  # a run killed before its first checkpoint starts over
                      **plan_part(args, "train"))
    extra = so101_model_fields(args) if env_of(args) == "so101" else {}
    model = GridSVLAConfig.preset(variant, image_size=data_image_size(args.data), **extra, **plan_part(args, "model"))
    return Path(train(cfg, None if done is not None else model)["checkpoint"])


FINAL = "final"  # a run's evaluated policy: its last checkpoint in float16


def final_policy(run: Path) -> Path:
    """``run/final``: the run's last checkpoint saved in float16 (written once, atomically). Evaluations read this
    folder, so the copy the archive keeps is exactly the policy that was evaluated."""
    final = run / FINAL
    if not (final / "model.safetensors").is_file():
        from grids_vla._io import replace_dir

        tmp = run / f".tmp_{FINAL}"
        GridSVLAPolicy.from_pretrained(latest_checkpoint(run)).save_pretrained(tmp, dtype=torch.float16)
        replace_dir(tmp, final)
    return final


#: The ``ood`` spec that evaluates a run with every camera shown grey (``grids-vla eval --blind``): how much of its
#: success does not need the images.
BLIND = "blind"


def eval_run(args: argparse.Namespace, variant: str, seed: int, perturbation: str | None = None) -> dict:
    """Evaluate ``final/`` in distribution (``run/eval``) or under ``perturbation`` (``run/ood/<slug>``)."""
    run = run_dir(args, variant, seed)
    final = final_policy(run)
    if env_of(args) == "so101":
        return eval_so101(args, final, run / "eval" if perturbation is None else run / "ood" / ood_slug(perturbation),
                          ood=perturbation is not None)
    if perturbation is None:
        return evaluate(EvalConfig(checkpoint=str(final), suite=args.suite, episodes_per_task=args.episodes_per_task,
                                   tasks=tuple(args.tasks) if args.tasks else None, threads=args.eval_threads,
                                   max_steps=args.max_steps, out=str(run / "eval"), video=args.video,
                                   workers=args.eval_workers))
    out = run / "ood" / ood_slug(perturbation)
    if perturbation.startswith("liberoplus:"):  # LIBERO-plus lives in its own environment: run it there
        return _eval_liberoplus(args, final, perturbation, out)
    # BLIND changes no scene: the same episodes with every camera shown grey
    blind = tuple(GridSVLAPolicy.from_pretrained(final).config.cameras) if perturbation == BLIND else ()
    return evaluate(EvalConfig(checkpoint=str(final), suite=args.suite, blind=blind,
                               perturbation=None if blind else perturbation,
                               episodes_per_task=args.ood_episodes_per_task,
                               tasks=tuple(args.tasks) if args.tasks else None, threads=args.eval_threads,
                               max_steps=args.max_steps, out=str(out), workers=args.eval_workers))


def ood_slug(perturbation: str) -> str:
    """Folder name of an out-of-distribution evaluation: ``lighting:0.8`` -> ``lighting-0.8``."""
    return perturbation.replace(":", "-").replace(",", "+")


def _eval_liberoplus(args: argparse.Namespace, final: Path, perturbation: str, out: Path) -> dict:
    """``grids-vla eval`` in ``--liberoplus-python``'s environment on a fixed spread of the category's variant tasks
    (``ood_plus_per_task`` per base task, one episode each from its first init state)."""
    import subprocess

    py = Path(args.liberoplus_python)
    if not py.is_file():
        raise SystemExit(f"--liberoplus-python {py} does not exist; build it with scripts/setup_liberoplus_env.sh")
    pattern = perturbation.split(":", 1)[1]
    pick = ("import json; from grids_vla.envs.libero.plus import spread_tasks; "
            f"print(json.dumps(spread_tasks({args.suite!r}, {pattern!r}, {args.ood_plus_per_task})))")
    tasks = json.loads(subprocess.run([str(py), "-c", pick], check=True, capture_output=True, text=True)
                       .stdout.strip().splitlines()[-1])
    cmd = [str(py), "-c", "from grids_vla.cli import main; main()", "eval", "--checkpoint", str(final),
           "--suite", args.suite, "--perturbation", perturbation, "--episodes-per-task", "1",
           "--tasks", *map(str, tasks), "--threads", str(args.eval_threads), "--workers", str(args.eval_workers),
           "--out", str(out)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "results.json").read_text())


# ------------------------------------------------------------------------------------------------------- SO-101
# A plan with "env": "so101" trains one policy on the demos of all its tasks (`grids-vla data so101`, one folder per
# task under "data"; the instruction tells the tasks apart) and evaluates every run, per task, on episodes_per_task
# seeded in-distribution scenes that no demo played (`grids-vla eval --env so101 --scenes in`; checked against the
# demo files' scene seeds) and on the first ood_episodes_per_task of the task's OOD scenes (`--scenes ood`).
ENVS = ("libero", "so101")
SO101_OOD = "ood_scenes"  # every SO-101 run's out-of-distribution evaluation, in run/ood/ood_scenes/
NOT_FOR_SO101 = ("suite", "ood_plus_per_task")  # LIBERO's plan fields


def env_of(args: argparse.Namespace) -> str:
    """The simulator of the plan: ``libero`` (also without a plan) or ``so101``."""
    return (args.plan or {}).get("env", "libero")


def so101_suite(tasks: list[str]) -> str:
    """The ``suite`` an SO-101 study's evaluations record: ``so101 pick_place_bowl+stack``."""
    return "so101 " + "+".join(tasks)


@functools.lru_cache(maxsize=8)
def so101_demos(data: str, tasks: tuple[str, ...]) -> dict:
    """What the SO-101 demos under ``data`` hold: ``instructions`` (set), demo scene ``seeds`` per task, the actions'
    width ``action_dim``. Each task's files must be in ``data/<task>/`` and nothing else under ``data``: the policy
    trains on every demo file found there."""
    import h5py

    root = Path(data)
    if not root.is_dir():
        raise SystemExit(f"--data {data}: expected a folder with one subfolder per task ({', '.join(tasks)}) made by "
                         f"`grids-vla data so101 --task T --out {data}`")
    try:
        files = find_demo_files(root)
    except FileNotFoundError:
        files = []
    found = {}
    for path in files:
        found.setdefault(path.relative_to(root).parts[0], []).append(path)
    stray = sorted(set(found) - set(tasks))
    if stray:
        raise SystemExit(f"--data {data}: holds demos of {stray} ({found[stray[0]][0]}), expected only the plan's "
                         f"tasks {list(tasks)}: the policy would train on them")
    out: dict = {"instructions": set(), "seeds": {}, "action_dim": None}
    for task in tasks:
        if task not in found:
            raise SystemExit(f"--data {data}: no demos of {task} (expected {data}/{task}/*_demo.hdf5 from "
                             f"`grids-vla data so101 --task {task} --out {data}`)")
        for path in found[task]:
            with h5py.File(path, "r") as f:
                out["instructions"].add(json.loads(f["data"].attrs["problem_info"])["language_instruction"])
                out["seeds"].setdefault(task, set()).update(int(d.attrs["seed"]) for d in f["data"].values())
                out["action_dim"] = int(f["data"]["demo_0"]["actions"].shape[1])
    return out


def so101_scenes(args: argparse.Namespace, ood: bool) -> dict[str, list]:
    """The scenes each task's evaluation plays: in-distribution episode ``i`` or OOD scene ``i``."""
    from grids_vla.experiments.evaluate_so101 import scene_for

    n = args.ood_episodes_per_task if ood else args.episodes_per_task
    return {t: [scene_for(t, "ood" if ood else "in", i) for i in range(n)] for t in args.plan["tasks"]}


def so101_model_fields(args: argparse.Namespace) -> dict:
    """Model fields an SO-101 policy takes from its demos and evaluation: the actions' width, and the instructions
    (learned language): those of the demos plus those of the evaluation scenes, so that no evaluation scene is
    refused for a colour the demos lack (with the study's data they are the same; a note says when not)."""
    demos = so101_demos(args.data, tuple(args.plan["tasks"]))
    asked = {s.instruction for ood in (False, True) for scenes in so101_scenes(args, ood).values() for s in scenes}
    if asked - demos["instructions"]:
        print(f"note: {len(asked - demos['instructions'])} evaluation instruction(s) are in no demo, e.g. "
              f"{sorted(asked - demos['instructions'])[0]!r}", file=sys.stderr)
    return {"action_dim": demos["action_dim"], "instructions": tuple(sorted(demos["instructions"] | asked))}


def _check_heldout(args: argparse.Namespace) -> None:
    """Refuse an in-distribution evaluation that would play a scene a demo played."""
    from grids_vla.experiments.evaluate_so101 import IN_SEED_BASE

    seeds = so101_demos(args.data, tuple(args.plan["tasks"]))["seeds"]
    for task, played in seeds.items():
        both = sorted(played & {IN_SEED_BASE + i for i in range(args.episodes_per_task)})
        if both:
            raise SystemExit(f"--data {args.data}: {task} demos played the evaluation scene seed(s) {both[:3]}; "
                             f"evaluation scenes must be held out")


def eval_so101(args: argparse.Namespace, final: Path, out: Path, ood: bool) -> dict:
    """Evaluate ``final`` on each task of the plan (``out/<task>``, resumable; ``--eval-workers`` tasks at a time)
    and merge the tasks into ``out``'s results.json / results.md / episodes.jsonl."""
    from grids_vla.experiments.evaluate_so101 import SO101EvalConfig, evaluate_so101

    if not ood:
        _check_heldout(args)
    cfgs = [SO101EvalConfig(checkpoint=str(final), task=t, scenes="ood" if ood else "in",
                            episodes=args.ood_episodes_per_task if ood else args.episodes_per_task,
                            max_steps=args.max_steps, threads=args.eval_threads, out=str(out / t),
                            video=0 if ood else args.video) for t in args.plan["tasks"]]
    workers = min(args.eval_workers, len(cfgs))
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = list(pool.map(evaluate_so101, cfgs))
    else:
        parts = [evaluate_so101(c) for c in cfgs]
    return _merge_so101(args, out, parts, SO101_OOD if ood else None, workers)


def _merge_so101(args: argparse.Namespace, out: Path, parts: list[dict], perturbation: str | None,
                 workers: int) -> dict:
    """The tasks' evaluations as one, in the files of a LIBERO evaluation: task ``i`` of the plan is ``task_id`` i
    (its name in ``task``) and a scene's index is its ``init_state``, so two runs' episodes pair on the same scenes
    as LIBERO's do on the same init states."""
    from grids_vla.experiments.evaluate_so101 import progress_markdown, summarize_so101

    tasks = args.plan["tasks"]
    episodes = []
    for i, task in enumerate(tasks):
        for e in sorted(load_episodes(out / task / EPISODES_NAME), key=lambda e: e["episode"]):
            episodes.append({**e, "task_id": i, "task": task, "init_state": e["episode"]})
    limits = {t: p["run"]["max_steps"] for t, p in zip(tasks, parts)}
    run = {**{k: v for k, v in parts[0]["run"].items() if k != "task"}, "suite": args.suite,
           "perturbation": perturbation, "tasks": list(range(len(tasks))), "task_names": list(tasks),
           "instructions": {str(i): p["run"]["instructions"][t] for i, (t, p) in enumerate(zip(tasks, parts))},
           "max_steps": limits[tasks[0]] if len(set(limits.values())) == 1 else limits, "workers": workers}
    res = summarize_so101(run, episodes)
    atomic_write_text(out / EPISODES_NAME, "".join(json.dumps(e) + "\n" for e in episodes))
    md = to_markdown(res) + ("\n" + progress_markdown(res) if "progress" in res else "")
    atomic_write_text(out / "results.md", md)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2))
    return res


# A run's small result files, relative to its folder; archived side by side under their file names.
ARCHIVED = ("eval/results.json", "eval/results.md", "eval/episodes.jsonl", "metrics.csv", "train_config.json")
DATA_NAME = "data.json"


@functools.lru_cache(maxsize=8)
def data_fingerprint(data: str) -> dict | None:
    """:func:`~grids_vla.envs.libero.dataset.demo_fingerprint` of ``data``, read once per process."""
    return demo_fingerprint(data)


def archive_run(args: argparse.Namespace, variant: str, seed: int, keep: bool = False) -> Path | None:
    """Copy a finished run's small result files to ``args.archive/<variant>_s<seed>/`` (each file atomically), its
    finished out-of-distribution evaluations to ``ood/<slug>/`` there, and with ``keep`` its ``final/`` policy to
    ``checkpoint/``."""
    run = run_dir(args, variant, seed)
    if not args.archive:
        return None
    dest = Path(args.archive) / f"{variant}_s{seed}"
    res = run / "eval" / "results.json"
    if res.is_file() and json.loads(res.read_text())["complete"]:
        fingerprint = data_fingerprint(args.data)
        if fingerprint is None:
            raise SystemExit(f"cannot archive {run}: no demos under --data {args.data} to fingerprint")
        dest.mkdir(parents=True, exist_ok=True)
        old = json.loads((dest / DATA_NAME).read_text()) if (dest / DATA_NAME).is_file() else {}
        host = {k: old[k] for k in HOST_KEYS if k in old} or _host()  # when and where it was first archived
        trained_on = {k: old.get(k) for k in fingerprint} if old else fingerprint  # a re-archive keeps its demos
        atomic_write_text(dest / DATA_NAME, json.dumps({"data": args.data, **fingerprint, **trained_on, **host},
                                                       indent=2))
        for rel in ARCHIVED:
            if (run / rel).is_file():
                _copy(run / rel, dest / Path(rel).name)
        if keep:
            for name in ("config.json", "model.safetensors"):
                _copy(run / FINAL / name, dest / "checkpoint" / name)
    elif not (dest / "results.json").is_file():
        return None  # nothing finished yet
    for ood in sorted((run / "ood").glob("*/results.json")):  # also for a run restored from its kept checkpoint
        if json.loads(ood.read_text())["complete"]:
            for name in ("results.json", "results.md", EPISODES_NAME):
                _copy(ood.parent / name, dest / "ood" / ood.parent.name / name)
    return dest


HOST_KEYS = ("date", "machine", "cpu", "torch", "python")


def _host() -> dict[str, str]:
    """The date (UTC) and the machine a run was archived on: what the rebuilt report says it ran on."""
    from datetime import UTC, datetime

    return {"date": datetime.now(UTC).date().isoformat(), "machine": platform.machine(),
            "cpu": f"{os.cpu_count()} cores", "torch": torch.__version__, "python": platform.python_version()}


def _copy(src: Path, dest: Path) -> None:
    """Copy one file byte for byte (csv rows end in \\r\\n; weights are binary), atomically."""
    from grids_vla._io import atomic_path

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(src.read_bytes())


def _check_archived(args: argparse.Namespace, folder: Path, variant: str, seed: int) -> None:
    """Refuse an archived run trained or evaluated with other settings than the ones asked for."""
    res = json.loads((folder / "results.json").read_text())["run"]
    cfg_path = folder / "train_config.json"
    if not cfg_path.is_file():
        raise SystemExit(f"archived run {folder} has no train_config.json: cannot check it matches the command line")
    cfg = json.loads(cfg_path.read_text())
    train_defaults, model_defaults = TrainConfig().to_dict(), GridSVLAConfig().to_dict()
    want = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
            "seed": seed} | {k: train_defaults[k] for k in PLAN_TRAIN_FIELDS} | plan_part(args, "train")
    wanted_model = GridSVLAConfig.preset(variant, **plan_part(args, "model")).to_dict()  # every field but the data's
    had = [(k, cfg["train"].get(k, train_defaults[k]), v) for k, v in want.items()]
    had += [(k, cfg["model"].get(k, model_defaults[k]), v) for k, v in wanted_model.items()
            if k not in PLAN_MODEL_FIXED]
    diff = {k: (old, new) for k, old, new in had if old != new}
    if res["suite"] != args.suite:
        diff["suite"] = (res["suite"], args.suite)
    if res["episodes_per_task"] != args.episodes_per_task:
        diff["episodes_per_task"] = (res["episodes_per_task"], args.episodes_per_task)
    if not (folder / DATA_NAME).is_file():
        raise SystemExit(f"archived run {folder} has no {DATA_NAME}: cannot tell which demos it was trained on")
    trained_on = json.loads((folder / DATA_NAME).read_text())
    current = data_fingerprint(args.data)
    if current is not None and demo_set(trained_on) != demo_set(current):
        diff["data"] = (f"{trained_on['demos']} demos / {trained_on['frames']} frames",
                        f"{current['demos']} demos / {current['frames']} frames under {args.data}")
    if diff:
        shown = ", ".join(f"{k}: archived {a!r}, asked {b!r}" for k, (a, b) in diff.items())
        raise SystemExit(f"archived run {folder} does not match this comparison ({shown}); "
                         "use another --archive or the matching flags")


def _run_files(args: argparse.Namespace, variant: str, seed: int) -> tuple[Path, Path] | None:
    """``(results.json, metrics.csv)`` of a run: its own folder first, else the archive (checked)."""
    run = run_dir(args, variant, seed)
    if (run / "eval" / "results.json").is_file():
        return run / "eval" / "results.json", run / "metrics.csv"
    folder = Path(args.archive) / f"{variant}_s{seed}" if args.archive else None
    if folder is not None and (folder / "results.json").is_file():
        _check_archived(args, folder, variant, seed)
        return folder / "results.json", folder / "metrics.csv"
    return None


def _archived_only(args: argparse.Namespace, variant: str, seed: int) -> bool:
    """True when the run's folder holds no finished evaluation but the archive does (checked): nothing to redo."""
    files = _run_files(args, variant, seed)
    return files is not None and Path(args.out) not in files[0].parents and json.loads(files[0].read_text())["complete"]


def _train_speed(metrics: Path, batch_size: int, skip: int = 20) -> float | None:
    """Samples/s over the logged steps, leaving out the first ``skip`` steps after each (re)start: ``elapsed_s``
    restarts from 0 when a run resumes."""
    rows = list(csv.DictReader(open(metrics))) if metrics.is_file() else []
    steps, seconds, since_start = 0, 0.0, 0
    for prev, row in zip(rows, rows[1:]):
        dt = float(row["elapsed_s"]) - float(prev["elapsed_s"])
        since_start = since_start + 1 if dt > 0 else 0
        if since_start > skip:
            steps, seconds = steps + 1, seconds + dt
    return steps * batch_size / seconds if steps else None


def report(args: argparse.Namespace) -> dict:
    """Per variant: success per seed and pooled (Wilson 95 %), per-task rates, train samples/s and latency."""
    rows = {}
    for variant in args.variants:
        seeds = {}
        for seed in args.seeds:
            files = _run_files(args, variant, seed)
            if files is None:
                continue
            res_path, metrics = files
            res = json.loads(res_path.read_text())
            seeds[seed] = {"successes": res["overall"]["successes"], "episodes": res["overall"]["episodes"],
                           "complete": res["complete"], "latency_ms": res["latency_ms"]["median"],
                           "tasks": {t: v["successes"] for t, v in res["tasks"].items()},
                           "train_samples_per_s": _train_speed(metrics, args.batch_size),
                           "source": str(res_path.parent)}
        if seeds:
            s = sum(v["successes"] for v in seeds.values())
            n = sum(v["episodes"] for v in seeds.values())
            rows[variant] = {"seeds": seeds, "successes": s, "episodes": n, "rate": s / n if n else None,
                             "ci95": wilson_interval(s, n),
                             "complete": all(v["complete"] for v in seeds.values()) and len(seeds) == len(args.seeds)}
    sets = {demo_set(json.loads((Path(v["source"]) / DATA_NAME).read_text()))
            for r in rows.values() for v in r["seeds"].values() if (Path(v["source"]) / DATA_NAME).is_file()}
    if len(sets) > 1:
        raise SystemExit(f"the archived runs were trained on {len(sets)} different demo sets; they cannot be pooled")
    lines = [
        f"# {args.suite}: success of {', '.join(rows) or 'nothing yet'}",
        "",
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, seeds {args.seeds}, {args.episodes_per_task} "
        + ("episodes per task from the official init states" if env_of(args) == "libero" else
           f"held-out in-distribution scenes per task (this table; the {args.ood_episodes_per_task} OOD scenes per "
           "task: benchmarks/results.py)")
        + f"; data `{args.data}`; eval {args.eval_workers} "
        f"process(es) x {args.eval_threads} thread(s); "
        f"{platform.machine()} CPU ({os.cpu_count()} cores), {date.today()}.",
        "",
        "| variant | success (pooled) | 95 % CI | per seed | train samples/s | latency ms (b=1) | complete |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for variant, r in rows.items():
        per_seed = ", ".join(f"s{k}: {v['successes']}/{v['episodes']}" for k, v in r["seeds"].items())
        speeds = [v["train_samples_per_s"] for v in r["seeds"].values() if v["train_samples_per_s"]]
        lats = [v["latency_ms"] for v in r["seeds"].values() if v["latency_ms"]]
        lines.append(f"| {variant} | {r['successes']}/{r['episodes']} = {100 * r['rate']:.1f} % | "
                     f"{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f} % | {per_seed} | "
                     f"{statistics.median(speeds) if speeds else float('nan'):.1f} | "
                     f"{statistics.median(lats) if lats else float('nan'):.2f} | {'yes' if r['complete'] else 'no'} |")
    paired = _paired_vs_dense(rows)
    if paired:
        lines += ["", "Paired episodes (same seed, task and init state) against dense; p: exact McNemar test on the "
                  "discordant pairs.", "",
                  "| variant | seeds | both succeed | only variant | only dense | neither | p |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for variant, c in paired.items():
            lines.append(f"| {variant} | {', '.join(f's{k}' for k in c['seeds'])} | {c['both']} | {c['only_a']} | "
                         f"{c['only_b']} | {c['neither']} | {c['p']:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "success.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "success.json",
                      json.dumps({"args": vars(args), "variants": rows, "paired_vs_dense": paired}, indent=2))
    _plot(rows, out / "success.png")
    print("\n".join(lines))
    return rows


def _paired_vs_dense(rows: dict) -> dict:
    """Each variant's complete evaluations paired episode by episode with dense's of the same seed, pooled."""
    dense = {k: v for k, v in rows.get("dense", {}).get("seeds", {}).items() if v["complete"]}
    out = {}
    for variant, r in rows.items():
        seeds = [k for k, v in r["seeds"].items() if v["complete"] and k in dense]
        if variant == "dense" or not seeds:
            continue
        counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0}
        for k in seeds:
            a, b = (load_episodes(Path(run["source"]) / EPISODES_NAME) for run in (r["seeds"][k], dense[k]))
            for key, n in paired_outcomes(a, b).items():
                counts[key] += n
        out[variant] = {"seeds": seeds, **counts, "p": mcnemar_exact(counts["only_a"], counts["only_b"])}
    return out


def _plot(rows: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 1.5, 3))
    names = list(rows)
    rates = [100 * rows[n]["rate"] for n in names]
    err = [[100 * (rows[n]["rate"] - rows[n]["ci95"][0]) for n in names],
           [100 * (rows[n]["ci95"][1] - rows[n]["rate"]) for n in names]]
    ax.bar(names, rates, yerr=err, capsize=4, color=["0.6" if n == "dense" else "tab:blue" for n in names])
    ax.set(ylabel="success % (pooled seeds, 95 % CI)", ylim=(0, 100))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Plan fields that set a command-line option of the same name (the plan is the record of the study's protocol).
PLAN_OPTIONS = ("suite", "data", "archive", "steps", "batch_size", "lr", "warmup_steps", "episodes_per_task",
                "ood_episodes_per_task", "ood_plus_per_task")
# A plan's optional "train" ({field: value}) sets these TrainConfig fields for every run; its optional "model" sets
# GridSVLAConfig fields on top of every variant's preset (those no preset of the plan sets itself).
PLAN_TRAIN_FIELDS = ("start_frames", "start_weight", "shift", "color_jitter", "weight_decay", "min_lr_ratio",
                     "grad_clip")
PLAN_MODEL_FIXED = ("instructions", "image_size", "action_dim")  # taken from the data (and the SO-101 scenes)


def plan_part(args: argparse.Namespace, part: str) -> dict:
    """The plan's ``"train"`` or ``"model"`` settings (empty without a plan or without that part)."""
    return dict((getattr(args, "plan", None) or {}).get(part, {}))


def _check_plan_parts(plan: dict, where: str) -> None:
    """The plan's ``"train"`` and ``"model"``: known fields, values the configs accept, no clash with a preset."""
    for part, allowed in (("train", set(PLAN_TRAIN_FIELDS)),
                          ("model", {f.name for f in dataclasses.fields(GridSVLAConfig)} - set(PLAN_MODEL_FIXED))):
        given = plan.get(part, {})
        if not isinstance(given, dict):
            raise SystemExit(f"{where}: {part}: found {given!r}, expected an object of {{field: value}}")
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise SystemExit(f"{where}: {part}: unknown or fixed fields {unknown}; expected some of {sorted(allowed)}")
    variants = sorted({v for st in plan["stages"] for v in st["variants"]})
    for v in variants:
        clash = sorted(set(plan.get("model", {})) & set(PRESETS[v]))
        if clash:
            raise SystemExit(f"{where}: model: {clash} are set by the preset {v!r}; a plan may only add fields no "
                             f"preset of it sets")
        try:
            GridSVLAConfig.preset(v, **plan.get("model", {}))
        except (TypeError, ValueError) as e:
            raise SystemExit(f"{where}: model: {e}") from None
    try:
        TrainConfig(**plan.get("train", {}))
    except (TypeError, ValueError) as e:
        raise SystemExit(f"{where}: train: {e}") from None


def load_plan(path: str) -> dict:
    """Read and check a study plan (see ``benchmarks/libero/study.json``); errors name the file and the field."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"--plan {path}: cannot read a JSON study plan ({e})") from None
    env = plan.get("env", "libero")
    if env not in ENVS:
        raise SystemExit(f"--plan {path}: env: found {env!r}, expected one of {', '.join(ENVS)}")
    fields = {*PLAN_OPTIONS, "env", "stages", "train", "model"} - (set(NOT_FOR_SO101) if env == "so101" else set()) \
        | ({"tasks"} if env == "so101" else set())
    unknown = sorted(set(plan) - fields - {"comment"})
    if unknown:
        raise SystemExit(f"--plan {path}: unknown fields {unknown} for env {env}; expected {sorted(fields)}")
    if env == "so101":
        missing = sorted((set(PLAN_OPTIONS) - set(NOT_FOR_SO101) | {"tasks"}) - set(plan))
        if missing:
            raise SystemExit(f"--plan {path}: missing fields {missing}; an so101 plan records its whole protocol")
        tasks = plan.get("tasks")
        if not isinstance(tasks, list) or not tasks or len(set(tasks)) != len(tasks) or \
                any(t not in TASKS for t in tasks):
            raise SystemExit(f"--plan {path}: tasks: found {tasks!r}, expected a list of distinct SO-101 tasks from "
                             f"{list(TASKS)}")
    for key, high in (("episodes_per_task", None), ("ood_episodes_per_task", N_OOD if env == "so101" else None)):
        v = plan.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (high is not None and v > high):
            raise SystemExit(f"--plan {path}: {key}: found {v!r}, expected an int >= 1"
                             + (f" and <= {high} (the OOD scenes per task)" if high is not None else ""))
    if not isinstance(plan.get("stages"), list) or not plan["stages"]:
        raise SystemExit(f"--plan {path}: 'stages' must be a non-empty list of stages")
    for i, st in enumerate(plan["stages"]):
        where = f"--plan {path}: stage {i} ({st.get('name', 'unnamed')})"
        bad = sorted(set(st) - {"name", "variants", "seeds", "keep", "ood", "comment"})
        if bad:
            raise SystemExit(f"{where}: unknown fields {bad}; expected name, variants, seeds, keep, ood")
        if env == "so101" and "ood" in st:
            raise SystemExit(f"{where}: found 'ood' {st['ood']!r}, expected none: it lists LIBERO perturbations, "
                             f"and every SO-101 run is evaluated on the OOD scenes (ood_episodes_per_task)")
        if not st.get("variants") or any(v not in PRESETS for v in st["variants"]):
            raise SystemExit(f"{where}: variants must be preset names from {sorted(PRESETS)}, got "
                             f"{st.get('variants')!r}")
        if not st.get("seeds") or not all(isinstance(x, int) for x in st["seeds"]):
            raise SystemExit(f"{where}: seeds must be a non-empty list of ints, got {st.get('seeds')!r}")
    _check_plan_parts(plan, f"--plan {path}")
    return plan


def jobs(args: argparse.Namespace) -> list[tuple[str, int, bool, tuple[str, ...]]]:
    """``(variant, seed, keep, ood specs)`` in the order to run: stage by stage, seed-major within a stage (so a run
    stopped half-way has every variant of the stage on the first seeds). A run named again by a later stage (e.g. for
    its out-of-distribution evaluations) is trained and evaluated where it first appears; the later entry only adds
    what it asks for, at its own place in the order. ``keep`` holds for a run when any stage asks for it."""
    stages = args.plan["stages"] if args.plan else [{"variants": args.variants, "seeds": args.seeds,
                                                     "keep": args.keep_checkpoints, "ood": []}]
    if args.stage:
        names = [st.get("name") for st in stages]
        missing = sorted(set(args.stage) - set(names))
        if missing:
            raise SystemExit(f"--stage {missing}: not in the plan; its stages are {names}")
    keep = {(v, x) for st in stages if st.get("keep") for x in st["seeds"] for v in st["variants"]}
    always = (SO101_OOD,) if env_of(args) == "so101" else ()  # part of every SO-101 run's evaluation
    out: list[tuple[str, int, bool, tuple[str, ...]]] = []
    for st in stages:
        if args.stage and st.get("name") not in args.stage:
            continue
        for seed in st["seeds"]:
            for variant in st["variants"]:
                job = (variant, seed, (variant, seed) in keep, tuple(st.get("ood", ())) + always)
                if job not in out:
                    out.append(job)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default=None, help="a study plan (JSON, e.g. benchmarks/libero/study.json): sets the "
                   "suite, data, archive and protocol, and the runs in order of value")
    p.add_argument("--stage", nargs="+", default=None, help="with --plan: only these stages")
    p.add_argument("--data", default=None, help="folder of *_demo.hdf5 files (one suite)")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="task ids to evaluate (default: all)")
    p.add_argument("--variants", nargs="+", default=["dense", "grids-16"], choices=list(PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--ood-episodes-per-task", type=int, default=5)
    p.add_argument("--ood-plus-per-task", type=int, default=5,
                   help="LIBERO-plus: variant tasks evaluated per base task (one episode each)")
    p.add_argument("--liberoplus-python", default=".venv-liberoplus/bin/python")
    p.add_argument("--keep-checkpoints", action="store_true", help="archive each run's final/ policy (float16)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="episode step limit (default: the LIBERO suite's, or the SO-101 task's)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where runs train (auto: a CUDA device when torch sees one); evaluation runs the simulator "
                        "and the policy on CPUs, in --eval-workers processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads (training; each evaluation worker)")
    p.add_argument("--eval-workers", type=int, default=1,
                   help="evaluation processes in parallel (latency is then measured beside the other simulators)")
    p.add_argument("--eval-threads", type=int, default=None,
                   help="torch threads per evaluation process (default: --threads divided among --eval-workers)")
    p.add_argument("--video", type=int, default=0, help="MP4s of the first N episodes of each evaluation")
    p.add_argument("--phase", choices=["all", "train", "eval", "report"], default="all")
    p.add_argument("--out", default="runs/success")
    p.add_argument("--archive", default=None,
                   help="folder for each finished run's small result files (e.g. benchmarks/libero/success); the "
                        "report also reads runs from it whose folder under --out is gone")
    args = p.parse_args(argv)
    args.plan = load_plan(args.plan) if args.plan else None
    if args.plan:
        for name in PLAN_OPTIONS:
            if name in args.plan:
                setattr(args, name, args.plan[name])
        stages = args.plan["stages"]
        args.variants = list(dict.fromkeys(v for st in stages for v in st["variants"]))
        args.seeds = sorted({x for st in stages for x in st["seeds"]})
    elif args.stage:
        raise SystemExit("--stage needs --plan")
    if env_of(args) == "so101":
        if args.tasks:
            raise SystemExit(f"--tasks {args.tasks}: LIBERO task ids; an so101 plan names its tasks ('tasks')")
        args.suite = so101_suite(args.plan["tasks"])
    if not args.data:
        raise SystemExit("--data is required (or a --plan that names it)")
    if args.eval_threads is None:
        args.eval_threads = max(1, args.threads // args.eval_workers)
    torch.set_num_threads(args.threads)
    for variant, seed, keep, ood in jobs(args):
        if _archived_only(args, variant, seed):
            missing = _missing_ood(args, variant, seed, ood, keep)
            if not missing or args.phase in ("train", "report"):
                print(f"== {variant} seed {seed}: finished earlier, archived in {args.archive}", file=sys.stderr)
                continue
            _restore_final(args, variant, seed, missing)
        elif args.phase in ("all", "train"):
            print(f"== train {variant} seed {seed}", file=sys.stderr, flush=True)
            train_run(args, variant, seed)
        if args.phase in ("all", "eval"):
            print(f"== eval {variant} seed {seed}", file=sys.stderr, flush=True)
            if not _archived_only(args, variant, seed):
                eval_run(args, variant, seed)
                archive_run(args, variant, seed, keep)
            done = set(ood) - set(_missing_ood(args, variant, seed, ood, keep=False)) if args.archive else set()
            for spec in ood:
                if spec in done:  # archived (on another machine, or before a stop): not evaluated again
                    continue
                print(f"== eval {variant} seed {seed} under {spec}", file=sys.stderr, flush=True)
                eval_run(args, variant, seed, spec)
                archive_run(args, variant, seed, keep)  # each finished evaluation reaches the archive at once
        archive_run(args, variant, seed, keep)
    report(args)


def _restore_final(args: argparse.Namespace, variant: str, seed: int, missing: list[str]) -> None:
    """An archived run asked for more (out-of-distribution evaluations) whose run folder is gone: put its kept
    checkpoint back as ``final/``; without one it cannot be evaluated again without retraining, which would not be
    the archived policy."""
    run = run_dir(args, variant, seed)
    kept = Path(args.archive) / f"{variant}_s{seed}" / "checkpoint"
    if (run / FINAL / "model.safetensors").is_file():
        return
    if not (kept / "model.safetensors").is_file():
        raise SystemExit(f"{variant} seed {seed} still needs {missing}, but its run folder {run} is gone and the "
                         f"archive {kept.parent} keeps no checkpoint; evaluate where the run folder is")
    for name in ("config.json", "model.safetensors"):
        _copy(kept / name, run / FINAL / name)


def _missing_ood(args: argparse.Namespace, variant: str, seed: int, ood: tuple[str, ...], keep: bool) -> list[str]:
    """What an archived run still lacks: its kept checkpoint, or finished out-of-distribution evaluations."""
    folder = Path(args.archive) / f"{variant}_s{seed}"
    missing = [s for s in ood if not (folder / "ood" / ood_slug(s) / "results.json").is_file()]
    return missing + (["checkpoint"] if keep and not (folder / "checkpoint" / "model.safetensors").is_file() else [])


if __name__ == "__main__":
    main()
