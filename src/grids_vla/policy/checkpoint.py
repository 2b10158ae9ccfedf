"""The checkpoint folder layout, in one place.

A policy folder (``save_pretrained``) holds ``config.json`` and ``model.safetensors``. A training run folder keeps
its checkpoints as ``checkpoints/step_NNNNNNN/`` (a policy folder plus ``training_state.pt``: optimizer, scheduler,
RNG) and names the newest complete one in the text file ``checkpoints/latest``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text, replace_dir

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "STATE_NAME", "CHECKPOINTS_DIR", "LATEST_NAME", "step_dir",
           "latest_checkpoint", "load_policy_or_exit", "resolve_checkpoint", "save_checkpoint"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "training_state.pt"
CHECKPOINTS_DIR = "checkpoints"
LATEST_NAME = "latest"


def step_dir(run: str | os.PathLike[str], step: int) -> Path:
    """The checkpoint folder of ``step`` in a training run folder."""
    return Path(run) / CHECKPOINTS_DIR / f"step_{step:07d}"


def latest_checkpoint(run: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run folder (named in ``checkpoints/latest``), or ``None``."""
    pointer = Path(run) / CHECKPOINTS_DIR / LATEST_NAME
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / STATE_NAME).is_file() else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A ``save_pretrained`` folder, or a training run folder (its latest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if (p / CONFIG_NAME).is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest
    raise FileNotFoundError(f"{p} is neither a policy checkpoint (no {CONFIG_NAME}) nor a training run folder")



def load_policy_or_exit(path: str | os.PathLike[str], flag: str = "--checkpoint") -> tuple[Path, Any]:
    """For command-line scripts: the checkpoint folder :func:`resolve_checkpoint` finds at ``path`` and its
    :class:`~grids_vla.policy.GridSVLAPolicy` in eval mode; a missing or unusable ``path`` exits with one line naming
    ``flag``."""
    from .modeling_grids_vla import GridSVLAPolicy

    try:
        ckpt = resolve_checkpoint(path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{flag}: {e}") from None
    return ckpt, GridSVLAPolicy.from_pretrained(ckpt).eval()

def save_checkpoint(run: str | os.PathLike[str], step: int, model: Any, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step_N`` (``model.save_pretrained`` plus the training ``state``) into a temp folder, move
    it into place, then point ``latest`` at it; returns the checkpoint folder."""
    final = step_dir(run, step)
    tmp = final.with_name(f".tmp_{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(state, tmp / STATE_NAME)
    replace_dir(tmp, final)
    atomic_write_text(final.parent / LATEST_NAME, final.name)
    return final
