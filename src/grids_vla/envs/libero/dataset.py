"""Read LIBERO-layout demo files (written by ``grids-vla data libero``, see ``generate``) for training and export.

The files hold images as rendered (upside down, like the official LIBERO files); everything here returns them
upright. No simulator is needed: only h5py (and torch for :class:`LiberoDemoDataset` items and
:func:`dataset_statistics`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .suites import CAMERA_KEYS, STATE_KEYS, state_vector

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["LiberoDemoDataset", "data_image_size", "dataset_statistics", "demo_fingerprint", "demo_set",
           "find_demo_files", "read_demo"]


@contextmanager
def _reading(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise what h5py (or a missing key, or bad JSON) raises while reading ``path`` as one OSError naming it."""
    try:
        yield
    except (OSError, KeyError, ValueError) as e:
        reason = e.args[0] if e.args else type(e).__name__
        raise OSError(f"{path} is not a readable LIBERO-layout demo file ({reason}); expected HDF5 with "
                      f"data/demo_N/{{actions, obs}} as `grids-vla data libero` writes") from e


def find_demo_files(data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The finished ``*_demo.hdf5`` task files of ``data``: a file, a folder (searched recursively, sorted), or a list
    of either. A running generation's ``.shards`` work folder is skipped."""
    items = [data] if isinstance(data, str | os.PathLike) else list(data)
    files: list[Path] = []
    for item in items:
        root = Path(item)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(sorted(p for p in root.rglob("*_demo.hdf5") if ".shards" not in p.parts))
        else:
            raise FileNotFoundError(f"--data {root} does not exist")
    if not files:
        where = ", ".join(str(i) for i in items)
        raise FileNotFoundError(f"no *_demo.hdf5 files under {where} (make some with `grids-vla data libero`)")
    return files


def demo_fingerprint(data: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What identifies the demos under ``data``; ``None`` when there are none.

    ``demos`` and ``frames``; ``actions_sha256``, a SHA-256 of every demo's actions (files and demos in order); and
    ``scenes_sha256``, a SHA-256 of what the generator was asked for: each file's name and ``env_args`` and the scene
    seed of each of its demos (``None`` when a demo records no seed, as in files not made by ``grids-vla data``).
    The same command regenerated on another machine has given the same scenes but a few frames more or fewer
    (28,545 vs 28,548 frames of 200 libero_object demos): the scripted expert's floating-point path differs.
    """
    import hashlib

    import h5py

    try:
        files = find_demo_files(data)
    except (FileNotFoundError, ValueError):
        return None
    actions, scenes, demos, frames, seeded = hashlib.sha256(), hashlib.sha256(), 0, 0, True
    for path in files:
        with _reading(path), h5py.File(path, "r") as f:
            scenes.update(f"{path.name}|{f['data'].attrs.get('env_args', '')}".encode())
            for name in sorted(f["data"], key=lambda n: int(n.split("_")[-1])):
                demo = f["data"][name]
                a = np.ascontiguousarray(demo["actions"][()], dtype=np.float64)
                actions.update(a.tobytes())
                seeded = seeded and "seed" in demo.attrs
                scenes.update(f"|{name}:{demo.attrs.get('seed', '')}".encode())
                demos, frames = demos + 1, frames + len(a)
    return {"demos": demos, "frames": frames, "actions_sha256": actions.hexdigest(),
            "scenes_sha256": scenes.hexdigest() if seeded else None}


def demo_set(fingerprint: dict[str, Any]) -> str:
    """The demo set a :func:`demo_fingerprint` belongs to: its scenes when every demo records its seed (so
    regenerations of one command pool), else its exact actions."""
    return fingerprint.get("scenes_sha256") or fingerprint["actions_sha256"]


def data_image_size(data: str | os.PathLike[str]) -> int:
    """Image side in px of the demos under ``data`` (the first file's first demo)."""
    import h5py

    path = find_demo_files(data)[0]
    with _reading(path), h5py.File(path, "r") as f:
        obs = f["data"]["demo_0"]["obs"]
        key = CAMERA_KEYS["agentview"] if CAMERA_KEYS["agentview"] in obs else CAMERA_KEYS["eye_in_hand"]
        return int(obs[key].shape[1])


def dataset_statistics(files: Sequence[str | os.PathLike[str]]) -> dict[str, Tensor]:
    """Mean and std (float32 tensors) of the robot state (:data:`~.suites.STATE_KEYS`) and of the actions over every
    frame of ``files``, read once: ``state_mean``, ``state_std``, ``action_mean``, ``action_std``."""
    import h5py
    import torch

    states, actions = [], []
    for p in files:
        with _reading(p), h5py.File(p, "r") as f:
            for d in f["data"].values():
                states.append(state_vector(d["obs"]))
                actions.append(d["actions"][()])
    s = torch.from_numpy(np.concatenate(states)).float()
    a = torch.from_numpy(np.concatenate(actions)).float()
    return {"state_mean": s.mean(0), "state_std": s.std(0, correction=0),
            "action_mean": a.mean(0), "action_std": a.std(0, correction=0)}


def read_demo(path: str | os.PathLike[str], index: int, upright: bool = True) -> dict[str, Any]:
    """One demo of a LIBERO-layout file as numpy arrays (images upright unless ``upright=False``)."""
    import h5py

    with _reading(path), h5py.File(path, "r") as f:
        data = f["data"]
        key = f"demo_{index}"
        if key not in data:
            raise IndexError(f"{path} has no {key} (demos: {len(data)})")
        d = data[key]
        out: dict[str, Any] = {"actions": d["actions"][()], "states": d["states"][()]}
        for k, v in d["obs"].items():
            arr = v[()]
            out[k] = arr[:, ::-1, ::-1].copy() if (upright and k in CAMERA_KEYS.values()) else arr
        out["instruction"] = json.loads(data.attrs["problem_info"])["language_instruction"]
    return out


class LiberoDemoDataset:
    """Frames of LIBERO-layout HDF5 files as a torch-style map dataset.

    Each item is one time step: ``{"agentview", "eye_in_hand"}`` uint8 tensors (3, H, W) upright, ``state`` (8,) =
    ee_pos + ee_ori + gripper_states (:func:`~.suites.state_vector`), ``action`` (chunk, 7) (padded by repeating the
    last action), and ``instruction``. Files are opened lazily once per process (so each DataLoader worker gets its
    own handle; h5py handles must not be shared across fork). :meth:`preload` decodes every image once into memory;
    reading frames one at a time from gzip chunks that span many frames (how LIBERO-style files are often chunked)
    otherwise decompresses a whole chunk per frame.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], chunk: int = 1) -> None:
        import h5py

        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise ValueError("no HDF5 files given")
        self.chunk = chunk
        self.index: list[tuple[int, int, int]] = []  # (file, demo, t)
        self.lengths: dict[tuple[int, int], int] = {}
        self.instructions: list[str] = []
        for fi, p in enumerate(self.paths):
            with _reading(p), h5py.File(p, "r") as f:
                data = f["data"]
                self.instructions.append(json.loads(data.attrs["problem_info"])["language_instruction"])
                for key in sorted(data.keys(), key=lambda k: int(k.split("_")[1])):
                    di = int(key.split("_")[1])
                    n = int(data[key]["actions"].shape[0])
                    self.lengths[(fi, di)] = n
                    self.index.extend((fi, di, t) for t in range(n))
        self._handles: dict[int, Any] = {}
        self._pid = -1
        self._images: dict[tuple[int, int, str], np.ndarray] = {}  # (file, demo, obs key) -> frames, once preloaded

    def __len__(self) -> int:
        return len(self.index)

    def image_bytes(self) -> int:
        """Bytes the decoded camera images take (what :meth:`preload` would hold), read from the dataset shapes."""
        import h5py

        total = 0
        for fi, p in enumerate(self.paths):
            with _reading(p), h5py.File(p, "r") as f:
                for (file, di), _ in self.lengths.items():
                    if file == fi:
                        o = f["data"][f"demo_{di}"]["obs"]
                        total += sum(o[key].size * o[key].dtype.itemsize for key in CAMERA_KEYS.values() if key in o)
        return total

    def preload(self) -> None:
        """Decode every camera image into memory (whole demos at once, each chunk decompressed once).

        Call it before the DataLoader starts its workers: forked workers share the arrays instead of each decoding
        the files again."""
        for fi, di in self.lengths:
            with _reading(self.paths[fi]):
                o = self._file(fi)["data"][f"demo_{di}"]["obs"]
                for key in CAMERA_KEYS.values():
                    if key in o:
                        self._images[(fi, di, key)] = o[key][()]
        self._handles = {}  # no open handle crosses a fork

    def _frame(self, fi: int, di: int, key: str, t: int, obs: Any) -> np.ndarray:
        frames = self._images.get((fi, di, key))
        return frames[t] if frames is not None else obs[key][t]

    def _file(self, fi: int) -> Any:
        import h5py

        if self._pid != os.getpid():  # new worker process: drop inherited handles
            self._handles, self._pid = {}, os.getpid()
        if fi not in self._handles:
            self._handles[fi] = h5py.File(self.paths[fi], "r")
        return self._handles[fi]

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        fi, di, t = self.index[i]
        d = self._file(fi)["data"][f"demo_{di}"]
        o = d["obs"]
        n = self.lengths[(fi, di)]
        item: dict[str, Any] = {}
        for name, key in CAMERA_KEYS.items():
            if key in o:
                img = np.ascontiguousarray(self._frame(fi, di, key, t, o)[::-1, ::-1])
                item[name] = torch.from_numpy(img).permute(2, 0, 1)
        item["state"] = torch.from_numpy(state_vector({k: o[k][t] for k in STATE_KEYS}).astype(np.float32))
        hi = min(t + self.chunk, n)
        act = d["actions"][t:hi].astype(np.float32)
        if len(act) < self.chunk:
            act = np.concatenate([act, np.repeat(act[-1:], self.chunk - len(act), axis=0)])
        item["action"] = torch.from_numpy(act)
        item["instruction"] = self.instructions[fi]
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        return state
