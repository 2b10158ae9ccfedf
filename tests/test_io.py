"""The project's atomic writers: a failed write leaves the old content and no temp file behind."""

import json

import pytest

from grids_vla._io import atomic_path, atomic_write_text, replace_dir, write_json


def test_atomic_write_text_keeps_bytes(tmp_path):
    atomic_write_text(tmp_path / "a.csv", "x,y\r\n1,2\r\n", newline="")
    assert (tmp_path / "a.csv").read_bytes() == b"x,y\r\n1,2\r\n"


def test_failed_write_keeps_old_content(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_keep_suffix_puts_the_extension_last(tmp_path):
    with atomic_path(tmp_path / "v.mp4", keep_suffix=True) as tmp:
        assert tmp.suffix == ".mp4" and tmp.name != "v.mp4"
        tmp.write_bytes(b"data")
    assert (tmp_path / "v.mp4").read_bytes() == b"data"


def test_replace_dir(tmp_path):
    final, tmp = tmp_path / "step_1", tmp_path / ".tmp_step_1"
    final.mkdir()
    (final / "old").write_text("1")
    tmp.mkdir()
    (tmp / "new").write_text("2")
    replace_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1"]


def test_write_json_returns_the_text_and_writes_it_when_asked(tmp_path):
    res = {"a": [1, 2], "b": {"c": 0.5}}
    text = write_json(res, None)
    assert json.loads(text) == res and not list(tmp_path.iterdir())
    out = tmp_path / "new" / "r.json"  # its folder is made
    assert write_json(res, out) == text and out.read_text() == text + "\n"
    assert not list(out.parent.glob("*.tmp"))
