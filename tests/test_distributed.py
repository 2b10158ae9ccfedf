"""``grids-vla train`` in two processes on CPU (``accelerate launch``, gloo) against one process at the same global
batch: same losses and weights within float32 reduction-order noise, every checkpoint written once by rank 0, and a
stopped two-process run resumes with ``--resume``.

Launch (docs/policy.md, "Several machines"): ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2
...``. ``--multi_gpu`` only picks accelerate's torchrun launcher; ``ACCELERATE_USE_CPU=1`` makes each process a gloo
CPU rank. (``accelerate launch --cpu --num_processes 2`` starts a single process: its multi-CPU mode needs MPI.)
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate", reason="accelerate not installed: pip install 'grids-vla[train]'")

from grids_vla.experiments.train import TrainConfig, train  # noqa: E402
from grids_vla.policy import GridSVLAPolicy  # noqa: E402
from grids_vla.policy.checkpoint import CONFIG_NAME, STATE_NAME, WEIGHTS_NAME, latest_checkpoint  # noqa: E402
from test_policy import INSTRUCTIONS, SIZE, _write_task, batch_for  # noqa: E402

GLOBAL_BATCH, STEPS, SAVE_EVERY, STOP_AFTER = 8, 6, 2, 4
# Model and run settings shared by both runs (flow head: its noise and time draws are sliced per process too).
MODEL = dict(image_size=SIZE, patch_size=8, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=1, heads=2,
             k=4, chunk=4, action_head="flow")
RUN = dict(steps=STEPS, save_every=SAVE_EVERY, lr=3e-3, warmup_steps=1, seed=5, num_workers=0, log_every=STEPS)
# Tolerances. The two runs see the same samples, augmentation and flow draws; only float32 reductions run in another
# order (batch-4 instead of batch-8 kernels, DDP's average of two half-batch gradients instead of one mean over 8),
# which moves a loss by a few float32 ulps (measured: the final loss differs by ~1e-7 relative, the logged 6-decimal
# losses not at all). A loss may differ by 1e-5 relative, 100x that; a wrong split (another sample, another
# augmentation draw, one rank's loss logged) moves it by 1e-2 or more. Weights differ by <= ~3e-7 (bound 1e-5) while
# training moves them by ~6e-3 between two checkpoints, except the attention key biases: their gradient is exactly zero
# (softmax ignores a constant added to every key's logit), so what backward returns for them is rounding noise, and
# AdamW (update ~ m / sqrt(v)) turns noise of either sign into steps of up to lr; they drift by up to ~lr/10 without
# changing any output, so they are left out of the weight comparison and the predictions are compared instead. The
# grad norm is logged with 4 decimals, so it may differ by one unit in the last one.
LOSS_RTOL, GRAD_ATOL, WEIGHT_ATOL, OUTPUT_ATOL = 1e-5, 1.01e-4, 1e-5, 1e-5

# Wraps the CLI so each process logs which checkpoints it saves (train.py calls save_checkpoint by that name).
RUNNER = """
import os, sys
import grids_vla.experiments.train as t
from grids_vla.cli import main
save = t.save_checkpoint
def logged(run, step, model, state):
    with open(os.environ["SAVES_LOG"], "a") as f:
        f.write(f"{os.environ.get('RANK', '-')} {step}\\n")
    return save(run, step, model, state)
t.save_checkpoint = logged
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, instruction in enumerate(INSTRUCTIONS):
        _write_task(root / f"task{i}_demo.hdf5", instruction, demos=2, steps=12, rng=rng)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _launch(tmp: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    runner = tmp / "runner.py"
    runner.write_text(RUNNER)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_HOME=str(tmp / "hf"),  # no user config
               SAVES_LOG=str(tmp / "saves.log"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RUN.items()]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(runner),
           "train", "--data", str(data), "--out", str(out), f"--batch-size={GLOBAL_BATCH // 2}", *flags, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_train_like_one_write_checkpoints_once_and_resume(data, tmp_path) -> None:
    # one process at the global batch, in this process (one thread, as each launched process has)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from grids_vla.policy import GridSVLAConfig

        one = train(TrainConfig(data=str(data), out=str(tmp_path / "one"), batch_size=GLOBAL_BATCH, **RUN),
                    GridSVLAConfig(**MODEL), log=open(os.devnull, "w"))
    finally:
        torch.set_num_threads(threads)
    assert one["step"] == STEPS

    # two processes at half the batch each: stopped after STOP_AFTER steps (like a kill after a checkpoint) ...
    out = tmp_path / "two"
    model_flags = [f"--{k.replace('_', '-')}={v}" for k, v in MODEL.items()]
    first = _launch(tmp_path, data, out, *model_flags, f"--stop-after={STOP_AFTER}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "batch 4 x 2" in first.stderr  # really two processes, not two single-process runs
    assert first.stderr.count(f"stopping at step {STOP_AFTER}") == 1  # rank 0 speaks
    assert latest_checkpoint(out).name == f"step_{STOP_AFTER:07d}"
    stopped = _metrics(out)
    assert [int(r["step"]) for r in stopped] == list(range(1, STOP_AFTER + 1))
    # ... then resumed with --resume to the end
    second = _launch(tmp_path, data, out, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"steps {STOP_AFTER}->{STEPS}" in second.stderr

    # each checkpoint written once, by rank 0, and complete
    saves = (tmp_path / "saves.log").read_text().split()
    assert saves == [x for s in (*range(SAVE_EVERY, STEPS, SAVE_EVERY), STEPS) for x in ("0", str(s))], saves
    ckpts = out / "checkpoints"
    names = [f"step_{s:07d}" for s in range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)]
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", *names]  # no temp folders left over
    assert (ckpts / "latest").read_text().strip() == names[-1]
    for name in names:
        assert sorted(p.name for p in (ckpts / name).iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, STATE_NAME])
        state = torch.load(ckpts / name / STATE_NAME, weights_only=True)
        assert state["step"] == int(name.split("_")[1])
        assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {state["step"]}

    # metrics.csv: one header, each step once (rank 0 writes it), the stopped run's history kept
    rows = _metrics(out)
    assert (out / "metrics.csv").read_text().count("step,") == 1
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert rows[:STOP_AFTER] == stopped

    # the same run as one process at the global batch, up to float32 reduction order
    ref = _metrics(tmp_path / "one")
    assert [r["lr"] for r in rows] == [r["lr"] for r in ref]
    two_losses = np.array([float(r["loss"]) for r in rows])
    np.testing.assert_allclose(two_losses, one["losses"], rtol=LOSS_RTOL, atol=0)
    np.testing.assert_allclose([float(r["grad_norm"]) for r in rows], [float(r["grad_norm"]) for r in ref],
                               rtol=0, atol=GRAD_ATOL)
    final = float(second.stdout.split("done: step")[1].split("loss ")[1].split(",")[0])  # rank 0's full-precision
    assert abs(final / one["losses"][-1] - 1) <= LOSS_RTOL

    two_policy, one_policy = (GridSVLAPolicy.from_pretrained(c) for c in (latest_checkpoint(out), one["checkpoint"]))
    a, b = two_policy.state_dict(), one_policy.state_dict()
    early = GridSVLAPolicy.from_pretrained(ckpts / names[0]).state_dict()
    assert a.keys() == b.keys()
    drift = {k: _without_key_bias(k, a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point()}
    moved = max((b[k] - early[k]).abs().max().item() for k in drift)
    batch = batch_for(one_policy.config, b=3, seed=1)
    with torch.no_grad():
        outputs = [p.eval().predict_action(batch, generator=torch.Generator().manual_seed(0))
                   for p in (two_policy, one_policy)]
    out_diff = (outputs[0] - outputs[1]).abs().max().item()
    print(f"\nfinal loss rel. diff {abs(final / one['losses'][-1] - 1):.1e}; weight drift {max(drift.values()):.1e} "
          f"(key biases left out), weights moved {moved:.1e} from step {SAVE_EVERY} to {STEPS}; "
          f"prediction diff {out_diff:.1e}")
    assert max(drift.values()) <= WEIGHT_ATOL < moved / 100, sorted(drift.items(), key=lambda kv: -kv[1])[:3]
    assert out_diff <= OUTPUT_ATOL


def _without_key_bias(name: str, diff: torch.Tensor) -> torch.Tensor:
    """``diff`` with the key third of an attention ``qkv`` bias zeroed (see the tolerances above)."""
    if name.endswith("qkv.bias"):
        diff = diff.clone()
        third = diff.numel() // 3
        diff[third:2 * third] = 0
    return diff
