"""Atomic file writes: the one place the project writes a file or folder that a reader (or a resumed run) may see.

Every writer goes through a temp name in the same folder and a rename, so a killed process leaves either the old
content or the new one, never half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "file_sha256", "replace_dir"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; once the block ends without error, the temp file is synced and renamed
    to ``path``. ``keep_suffix`` keeps the extension last (``.name.tmp.mp4``) for writers that pick a format by it.
    On error the temp file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}" if keep_suffix else f"{path.name}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, newline: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (``newline`` as in :func:`open`)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)


def write_json(result: object, out: str | os.PathLike[str] | None) -> str:
    """``result`` as indented JSON text; also written atomically to ``out`` (its folder made) when given."""
    text = json.dumps(result, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
    return text


def replace_dir(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the complete folder ``tmp`` to ``final``, replacing an existing ``final`` (renamed aside first, so
    ``final`` is never a half-written folder)."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(f".old_{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks (how results name the checkpoint they came from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
