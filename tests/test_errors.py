"""Errors a user can cause end as one line on stderr (naming the file or flag, what was found, what was expected) and
exit code 2; ``--debug`` or ``GRIDS_DEBUG=1`` shows the traceback instead."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from grids_vla.cli import main
from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

SIZE = 16
TINY = dict(image_size=SIZE, patch_size=8, vision_dim=8, vision_depth=1, vision_heads=1, dim=8, depth=2, heads=1,
            k=2, chunk=2, instructions=("do it",))
TINY_FLAGS = ["--vision-dim", "8", "--vision-depth", "1", "--vision-heads", "1", "--dim", "8", "--depth", "2",
              "--heads", "1", "--k", "2", "--chunk", "2", "--steps", "1", "--batch-size", "2", "--num-workers", "0"]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch) -> None:
    monkeypatch.delenv("GRIDS_DEBUG", raising=False)


def _demo_file(path: Path, steps: int = 6) -> Path:
    """A minimal LIBERO-layout task file: one demo of ``steps`` frames."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "do it"})
        d = data.create_group("demo_0")
        d.create_dataset("actions", data=np.zeros((steps, 7)))
        d.create_dataset("states", data=np.zeros((steps, 10)))
        o = d.create_group("obs")
        for cam in ("agentview_rgb", "eye_in_hand_rgb"):
            o.create_dataset(cam, data=np.zeros((steps, SIZE, SIZE, 3), dtype=np.uint8))
        for key, n in (("ee_pos", 3), ("ee_ori", 3), ("gripper_states", 2)):
            o.create_dataset(key, data=np.zeros((steps, n)))
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    _demo_file(tmp_path / "data" / "task_demo.hdf5")
    return tmp_path / "data"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return GridSVLAPolicy(GridSVLAConfig(**TINY)).save_pretrained(tmp_path / "policy")


def _one_line(capsys, argv: list[str], *named: str) -> str:
    """Run the CLI; it must exit 2 with exactly one stderr line, holding each of ``named``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith(f"grids-vla {argv[0]}: error: "), err
    for text in named:
        assert text in err, (text, err)
    return err


# ------------------------------------------------------------------------------------------------------------ data


def test_missing_or_empty_data_folder(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    _one_line(capsys, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
              f"--data {tmp_path / 'nope'} does not exist")
    _one_line(capsys, ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
              f"no *_demo.hdf5 files under {tmp_path / 'empty'}")


@pytest.mark.parametrize("kind, found", [
    ("corrupt", "file signature not found"),
    ("truncated", "truncated file"),
    ("not LIBERO", "object 'data' doesn't exist"),
])
def test_unreadable_hdf5_names_the_file(kind, found, data, tmp_path, capsys) -> None:
    bad = tmp_path / "bad" / "x_demo.hdf5"
    bad.parent.mkdir()
    if kind == "corrupt":
        bad.write_bytes(b"not HDF5 " * 64)
    elif kind == "truncated":
        whole = (data / "task_demo.hdf5").read_bytes()
        bad.write_bytes(whole[:len(whole) // 2])
    else:
        with h5py.File(bad, "w") as f:
            f.create_dataset("images", data=np.zeros(3))
    _one_line(capsys, ["train", "--data", str(bad.parent), "--out", str(tmp_path / "o")],
              f"{bad} is not a readable LIBERO-layout demo file", found, "expected HDF5 with data/demo_N")


def test_a_bad_file_among_good_ones_is_named_when_the_dataset_reads_it(data, tmp_path, capsys) -> None:
    bad = data / "zz_demo.hdf5"  # sorted after the good file, so the image-size probe reads the good one
    _demo_file(bad)
    with h5py.File(bad, "a") as f:
        del f["data/demo_0/obs/ee_pos"]
    _one_line(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--preload", "no", *TINY_FLAGS],
              f"{bad} is not a readable LIBERO-layout demo file", "ee_pos")


def test_data_command_errors_are_one_line(tmp_path, capsys) -> None:
    _one_line(capsys, ["data", "libero", "--suite", "libero_nope", "--demos-per-task", "1", "--out", str(tmp_path)],
              "unknown LIBERO suite 'libero_nope'")


# ----------------------------------------------------------------------------------------------------- checkpoints


def test_truncated_safetensors_names_the_file(checkpoint, tmp_path, capsys) -> None:
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    _one_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e")],
              f"{weights} is not a complete safetensors file")


@pytest.mark.parametrize("change, found", [
    ({"camras": ["agentview"]}, "unknown GridSVLAConfig fields: ['camras']"),
    ({"cameras": "agentview"}, "cameras must be a list of str, got 'agentview' (str)"),
    ({"k": "4"}, "k must be int, got '4' (str)"),
])
def test_checkpoint_config_with_an_unknown_key_or_a_wrong_type(change, found, checkpoint, tmp_path, capsys) -> None:
    path = checkpoint / "config.json"
    meta = json.loads(path.read_text())
    meta["config"].update(change)
    path.write_text(json.dumps(meta))
    _one_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e")], f"{path}: {found}")


def test_a_folder_that_is_not_a_checkpoint(tmp_path, capsys) -> None:
    _one_line(capsys, ["eval", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "e")],
              f"{tmp_path} is neither a policy checkpoint (no config.json) nor a training run folder")


def test_truncated_training_state_names_the_file(checkpoint, data, tmp_path, capsys) -> None:
    (checkpoint / "training_state.pt").write_bytes(b"PK\x03\x04 truncated")
    _one_line(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--resume", str(checkpoint)],
              f"{checkpoint / 'training_state.pt'} is not a readable training state")


# ---------------------------------------------------------------------------------------------------------- values


def test_wrong_types_are_rejected_by_the_config_not_turned_into_letters() -> None:
    with pytest.raises(ValueError, match=r"cameras must be a list of str, got 'agentview' \(str\)"):
        GridSVLAConfig(cameras="agentview")
    with pytest.raises(ValueError, match="reducer_kwargs must be dict"):
        GridSVLAConfig(reducer_kwargs=[1])
    with pytest.raises(ValueError, match=r"cond_on_language must be bool, got 1 \(int\)"):
        GridSVLAConfig(cond_on_language=1)
    with pytest.raises(ValueError, match="fastv_keep must be int or None"):
        GridSVLAConfig(fastv_keep=2.5)
    assert GridSVLAConfig(cameras=["agentview"], mlp_ratio=2).cameras == ("agentview",)  # a list and an int fit


def test_config_file_with_a_wrong_type_or_unknown_key(data, tmp_path, capsys) -> None:
    conf = tmp_path / "conf.json"
    for values, found in (({"cameras": "agentview"}, "cameras must be a list of str"),
                          ({"lr": "fast"}, "lr must be float, got 'fast'"),
                          ({"depht": 2}, "unknown config fields: ['depht']"),
                          ([1, 2], "expected a JSON object")):
        conf.write_text(json.dumps(values))
        _one_line(capsys, ["train", "--config", str(conf), "--data", str(data), "--out", str(tmp_path / "o")],
                  f"--config {conf}: {found}")
    conf.write_text("{not json")
    _one_line(capsys, ["train", "--config", str(conf), "--data", str(data), "--out", str(tmp_path / "o")],
              f"--config {conf}: Expecting property name")


def test_k_zero(data, tmp_path, capsys) -> None:
    _one_line(capsys, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--k", "0"],
              "k must be a positive int, got 0")


@pytest.mark.parametrize("spec, found", [("fog", "unknown perturbation 'fog'"), ("lighting:7", "severity")])
def test_bad_perturbation(spec, found, checkpoint, tmp_path, capsys) -> None:
    _one_line(capsys, ["eval", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "e"), "--perturbation", spec],
              f"--perturbation {spec}: ", found)


def test_flops_without_its_extra_says_which_to_install(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # what an environment without it looks like to find_spec
    _one_line(capsys, ["flops", "--model", "pi0"], "transformers", "pip install 'grids-vla[flops]'")
    _one_line(capsys, ["bench-latency", "--model", "pi0"], "pip install 'grids-vla[flops]'")


def test_flops_bad_value_goes_through_the_same_path(capsys) -> None:
    _one_line(capsys, ["flops", "--k", "0"], "k must be")


# ----------------------------------------------------------------------------------------------------------- debug


def test_debug_flag_or_env_shows_the_traceback(tmp_path, monkeypatch) -> None:
    argv = ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--debug", *argv])
    monkeypatch.setenv("GRIDS_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(argv)
    # as a command: one line and exit 2 without --debug; the traceback with it
    env = {k: v for k, v in os.environ.items() if k != "GRIDS_DEBUG"} | {"OMP_NUM_THREADS": "1"}
    plain = subprocess.run([sys.executable, "-m", "grids_vla.cli", *argv], env=env, capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr.splitlines() == [
        f"grids-vla train: error: --data {tmp_path / 'nope'} does not exist"], plain.stderr
    debug = subprocess.run([sys.executable, "-m", "grids_vla.cli", "--debug", *argv], env=env, capture_output=True,
                           text=True)
    assert debug.returncode == 1 and debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert "find_demo_files" in debug.stderr and debug.stderr.splitlines()[-1].startswith("FileNotFoundError: ")


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch) -> None:
    import grids_vla.cli as cli

    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "_list_reducers", broken)
    with pytest.raises(TypeError, match="a bug"):
        cli.main(["reducers"])
