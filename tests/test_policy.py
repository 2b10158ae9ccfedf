"""The compact VLA: shapes, gradients, strict save/load, training and exact resume (tiny synthetic LIBERO data)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from grids_vla.cli import main as cli_main
from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy
from grids_vla.policy.training import StepSampler, TrainConfig, augment, latest_checkpoint, train

SIZE = 64
INSTRUCTIONS = ("put the red square left", "put the red square right")


def tiny(**kw) -> GridSVLAConfig:
    base = dict(image_size=SIZE, patch_size=8, vision_dim=32, vision_depth=1, vision_heads=2, dim=32, depth=2, heads=2,
                mlp_ratio=2.0, k=4, chunk=4, instructions=INSTRUCTIONS)
    base.update(kw)
    return GridSVLAConfig(**base)


def batch_for(cfg: GridSVLAConfig, b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {cam: torch.randint(0, 256, (b, 3, cfg.image_size, cfg.image_size), generator=g, dtype=torch.uint8)
           for cam in cfg.cameras}
    out["state"] = torch.randn(b, cfg.state_dim, generator=g)
    out["action"] = torch.randn(b, cfg.chunk, cfg.action_dim, generator=g)
    out["instruction"] = [INSTRUCTIONS[i % 2] for i in range(b)]
    return out


def _write_task(path: Path, instruction: str, demos: int, steps: int, rng: np.random.Generator) -> None:
    """A LIBERO-layout task file whose actions depend on the image (a square's position), so a policy can learn."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "synthetic", "language_instruction": instruction})
        for i in range(demos):
            d = data.create_group(f"demo_{i}")
            pos = rng.integers(0, SIZE - 12, size=(steps, 2))
            imgs = np.full((steps, SIZE, SIZE, 3), 40, dtype=np.uint8)
            for t, (y, x) in enumerate(pos):
                imgs[t, y:y + 12, x:x + 12] = (220, 30, 30)
            act = np.zeros((steps, 7), dtype=np.float64)
            act[:, :2] = pos / SIZE * 2 - 1
            act[:, 6] = np.where(np.arange(steps) < steps // 2, -1.0, 1.0)
            d.create_dataset("actions", data=act)
            d.create_dataset("states", data=rng.normal(size=(steps, 10)))
            o = d.create_group("obs")
            o.create_dataset("agentview_rgb", data=imgs)
            o.create_dataset("eye_in_hand_rgb", data=imgs[:, ::-1].copy())
            o.create_dataset("ee_pos", data=rng.normal(size=(steps, 3)))
            o.create_dataset("ee_ori", data=rng.normal(size=(steps, 3)))
            o.create_dataset("gripper_states", data=rng.normal(size=(steps, 2)))
            o.create_dataset("joint_states", data=rng.normal(size=(steps, 7)))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("libero_synth") / "libero_synth"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, instruction in enumerate(INSTRUCTIONS):
        _write_task(root / f"task{i}_demo.hdf5", instruction, demos=2, steps=12, rng=rng)
    return root


# ------------------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("kw", [
    dict(reducer="dense"),
    dict(reducer="grids", k=4),
    dict(reducer="grids", k=1, predictor="attention", cond_on_language=True),
    dict(reducer="tokenlearner", k=4),
    dict(reducer="grids", k=16, fastv_keep=8, fastv_layer=0),
    dict(reducer="grids", k=4, vision_stem="conv"),
    dict(reducer="grids", k=4, vision_stem="coordconv", after_layer=0),
])
def test_forward_shapes(kw) -> None:
    cfg = tiny(**kw)
    model = GridSVLAPolicy(cfg)
    b = batch_for(cfg)
    out = model({c: b[c] for c in cfg.cameras}, b["state"], b["instruction"])
    assert out.actions.shape == (3, cfg.chunk, cfg.action_dim)
    per_cam = 64 if cfg.reducer == "dense" else cfg.k
    assert cfg.tokens_per_camera == per_cam
    assert out.coords.shape == (3, len(cfg.cameras), per_cam, 2)
    assert torch.isfinite(out.actions).all()
    assert out.coords.min() >= 0 and out.coords.max() <= 1


def test_every_registered_reducer_plugs_in() -> None:
    from grids_vla.reducers import list_reducers

    for name in list_reducers():
        cfg = tiny(reducer=name, k=4)
        model = GridSVLAPolicy(cfg)
        loss, out = model.compute_loss(batch_for(cfg))
        assert torch.isfinite(loss) and out.actions.shape == (3, cfg.chunk, cfg.action_dim), name
        loss.backward()


def test_presets_build_the_named_reducer_and_take_overrides() -> None:
    from grids_vla.policy.configuration_grids_vla import PRESETS, kept_tokens

    for name, fields in PRESETS.items():
        small = {"fastv_keep": 64} if "fastv_keep" in fields else {}  # FastV keeps half of 2 x 64 tokens here
        cfg = GridSVLAConfig.preset(name, image_size=SIZE, **small)
        assert cfg.image_size == SIZE and all(getattr(cfg, k) == small.get(k, v) for k, v in fields.items()), name
    assert GridSVLAConfig.preset("grids-16", k=4).k == 4
    assert GridSVLAConfig.preset("dense").tokens_per_camera == 256
    assert kept_tokens("dense", 16) == "all tokens" and kept_tokens("grids", 4) == "k=4"
    with pytest.raises(ValueError, match="unknown preset 'grids-17'"):
        GridSVLAConfig.preset("grids-17")


@pytest.mark.parametrize("name", sorted(__import__("grids_vla.policy.configuration_grids_vla",
                                                       fromlist=["PRESETS"]).PRESETS))
def test_every_preset_trains_a_step(name: str) -> None:
    """Each benchmark preset builds at a tiny size (K and FastV's kept count clipped to its 8x8 grid) and backprops."""
    from grids_vla.policy.configuration_grids_vla import PRESETS

    fields = dict(PRESETS[name])
    fields["k"] = min(fields.get("k", 4), 16)
    if "fastv_keep" in fields:
        fields["fastv_keep"] = 64
    cfg = tiny(**{**fields, "vision_depth": 2, "depth": 3})
    loss, out = GridSVLAPolicy(cfg).compute_loss(batch_for(cfg))
    assert torch.isfinite(loss) and out.actions.shape == (3, cfg.chunk, cfg.action_dim)
    loss.backward()


def test_128px_makes_a_16x16_grid() -> None:
    cfg = tiny(image_size=128, reducer="dense", vision_dim=16, dim=16)
    assert cfg.grid == (16, 16)
    out = GridSVLAPolicy(cfg)({c: torch.zeros(1, 3, 128, 128, dtype=torch.uint8) for c in cfg.cameras},
                              torch.zeros(1, 8), [INSTRUCTIONS[0]])
    assert out.coords.shape == (1, 2, 256, 2)


def test_gradients_reach_every_stage() -> None:
    cfg = tiny(reducer="grids", cond_on_language=True)
    model = GridSVLAPolicy(cfg)
    sampler = model.reducer.sampler
    with torch.no_grad():  # the coordinate head starts at zero (points at the anchors); move it as training would
        sampler.mlp[2].weight.normal_(std=0.01)
    loss, _ = model.compute_loss(batch_for(cfg))
    loss.backward()
    for name, p in (("vision patch", model.vision.patch.weight), ("language", model.lang_embed.weight),
                    ("coordinate head", sampler.mlp[2].weight), ("language FiLM", sampler.film.weight),
                    ("state", model.state_proj[0].weight), ("action head", model.action_head.weight),
                    ("action queries", model.action_queries)):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_reducer_changes_the_policy_output() -> None:
    cfg = tiny(reducer="grids")
    model = GridSVLAPolicy(cfg).eval()
    b = batch_for(cfg)
    before = model.predict_action(b)
    with torch.no_grad():
        model.reducer.sampler.mlp[2].bias.add_(0.7)  # move every point
    assert not torch.allclose(before, model.predict_action(b))


def test_state_dropout_swaps_the_state_token_in_training_only() -> None:
    """``state_dropout``: in training that share of samples gets the "no state" token, at evaluation none does; at
    1.0 the policy has no state path at all and its output ignores the state; the old default has no extra weight."""
    b = batch_for(tiny(), b=64)
    other = {**b, "state": b["state"] + 5.0}
    assert not hasattr(GridSVLAPolicy(tiny()), "no_state")  # 0.0 keeps the architecture unchanged

    model = GridSVLAPolicy(tiny(state_dropout=0.5))
    imgs = {c: b[c] for c in model.config.cameras}
    null = model.no_state + model.type_embed[2]
    with torch.no_grad():
        torch.manual_seed(0)
        dropped = torch.isclose(model.train()._prefix(imgs, b["state"], b["instruction"])[0][:, -1], null).all(-1)
        assert 16 <= dropped.sum() <= 48  # about half of 64
        kept = torch.isclose(model.eval()._prefix(imgs, b["state"], b["instruction"])[0][:, -1], null).all(-1)
        assert not kept.any()
    assert not torch.allclose(model.predict_action(b), model.predict_action(other))  # evaluation reads the state

    blind = GridSVLAPolicy(tiny(state_dropout=1.0)).eval()
    assert not hasattr(blind, "state_proj")
    torch.testing.assert_close(blind.predict_action(b), blind.predict_action(other), rtol=0, atol=0)
    loss, _ = blind.train().compute_loss(b)
    loss.backward()
    assert all(p.grad is not None for n, p in blind.named_parameters() if "no_state" in n)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="state_dropout must be in \\[0, 1\\]"):
            tiny(state_dropout=bad)


def test_bad_input_raises_clear_errors() -> None:
    cfg = tiny()
    model = GridSVLAPolicy(cfg)
    b = batch_for(cfg)
    imgs = {c: b[c] for c in cfg.cameras}
    with pytest.raises(ValueError, match="expects 64x64"):
        model({c: torch.zeros(3, 3, 32, 32) for c in cfg.cameras}, b["state"], b["instruction"])
    with pytest.raises(KeyError, match="lack cameras"):
        model({"agentview": b["agentview"]}, b["state"], b["instruction"])
    with pytest.raises(KeyError, match="not seen in training"):
        model(imgs, b["state"], ["open the drawer"] * 3)
    with pytest.raises(ValueError, match="state must have shape"):
        model(imgs, b["state"][:, :3], b["instruction"])
    with pytest.raises(TypeError, match="single string"):
        model(imgs, b["state"], "put the red square left")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny(image_size=60)
    with pytest.raises(ValueError, match="cond_on_language"):
        tiny(reducer="dense", cond_on_language=True)
    with pytest.raises(ValueError, match="predictor is a GridS option"):
        tiny(reducer="dense", predictor="attention")
    with pytest.raises(ValueError, match="unknown reducer"):
        GridSVLAPolicy(tiny(reducer="nope"))
    with pytest.raises(ValueError, match="fastv_keep"):
        tiny(reducer="grids", k=4, fastv_keep=100)
    with pytest.raises(ValueError, match="unknown GridSVLAConfig fields"):
        GridSVLAConfig.from_dict({"dimm": 3})
    with pytest.raises(ValueError, match="vision_stem must be one of"):
        tiny(vision_stem="resnet")
    with pytest.raises(ValueError, match="point_features must be one of \\('map', 'stem'\\), got 'pixels'"):
        tiny(point_features="pixels")
    for no_points in ({"reducer": "dense"}, {"reducer_kwargs": {"coords": "fixed-grid"}}):
        with pytest.raises(ValueError, match="point_features is what GridS's point predictor reads"):
            tiny(point_features="stem", **no_points)
    with pytest.raises(ValueError, match="patch_size must be a power of 2 >= 2, got 6"):
        tiny(vision_stem="conv", image_size=60, patch_size=6)


@pytest.mark.parametrize("after_layer", [None, 0])
def test_stem_point_features_place_points_by_content_alone(after_layer) -> None:
    """``point_features="stem"``: the points ignore the position embeddings (what the image shows places them) and
    follow the image; ``"map"`` reads the position embeddings too. The policy's actions read both either way."""
    b = batch_for(tiny())
    imgs = {c: b[c] for c in tiny().cameras}
    for features in ("map", "stem"):
        torch.manual_seed(0)
        model = GridSVLAPolicy(tiny(predictor="attention", point_features=features, after_layer=after_layer))
        with torch.no_grad():
            for p in model.reducer.coordinate_head_parameters():
                p.normal_(0.0, 1.0)
        model.eval()
        before = model(imgs, b["state"], b["instruction"])
        with torch.no_grad():
            model.vision.pos.normal_(0.0, 1.0)
        after = model(imgs, b["state"], b["instruction"])
        assert torch.equal(before.coords, after.coords) == (features == "stem"), features
        assert not torch.allclose(before.actions, after.actions)
        shifted = {c: x.roll(8, dims=-1) for c, x in imgs.items()}
        assert not torch.allclose(model(shifted, b["state"], b["instruction"]).coords, after.coords)


def test_conv_stem_makes_the_same_token_grid_from_overlapping_windows() -> None:
    """``vision_stem="conv"``: log2(p) stride-2 3x3 convolutions then 1x1 give the same (S/p)^2 token map as the
    patch embedding, and a token depends on pixels beyond its own p x p patch (the patch stem's do not)."""
    for stem in ("patch", "conv", "coordconv"):
        cfg = tiny(vision_stem=stem)
        torch.manual_seed(0)
        enc = GridSVLAPolicy(cfg).vision.eval()
        x = torch.randn(1, len(cfg.cameras), 3, cfg.image_size, cfg.image_size, requires_grad=True)
        tokens = enc.embed(x)
        assert tokens.shape == (1, len(cfg.cameras), cfg.grid_tokens, cfg.vision_dim)
        side, p = cfg.grid[1], cfg.patch_size
        tokens[0, 0, 3 * side + 3].sum().backward()  # token (3, 3): pixels [3p, 4p) in both axes
        seen = x.grad[0, 0].abs().sum(0) > 0
        rows, cols = seen.nonzero().unbind(1)
        inside = (rows.min() >= 3 * p) & (rows.max() < 4 * p) & (cols.min() >= 3 * p) & (cols.max() < 4 * p)
        assert bool(inside) == (stem == "patch"), stem


def test_coordconv_stem_tells_where_a_uniform_image_is() -> None:
    """``"coordconv"`` appends x, y in [-1, 1] (x along the width): on a uniform image its tokens still differ by
    position, as the conv stem's do not (up to the image border)."""
    from grids_vla.policy.modeling_grids_vla import CoordChannels

    x = CoordChannels()(torch.zeros(2, 3, 4, 6))
    assert x.shape == (2, 5, 4, 6)
    torch.testing.assert_close(x[0, 3, 0], torch.linspace(-1, 1, 6))
    torch.testing.assert_close(x[1, 4, :, 2], torch.linspace(-1, 1, 4))
    for stem, varies in (("conv", False), ("coordconv", True)):
        torch.manual_seed(0)
        stem_net = GridSVLAPolicy(tiny(vision_stem=stem)).vision.patch.eval()
        with torch.no_grad():
            t = stem_net(torch.full((1, 3, SIZE, SIZE), 0.3))[0, :, 2:-2, 2:-2]  # inner tokens, away from padding
        assert bool((t - t[:, :1, :1]).abs().max() > 1e-4) == varies, stem


# -------------------------------------------------------------------------------------------------- save / load


def test_half_precision_checkpoint_is_the_rounded_policy_exactly(tmp_path) -> None:
    """``save_pretrained(dtype=float16)``: half the bytes; loading gives exactly the policy with fp16-rounded weights,
    and saving that loaded policy in fp16 again gives the same tensors (the study evaluates and commits this form)."""
    cfg = tiny(reducer="grids")
    model = GridSVLAPolicy(cfg).eval()
    model.save_pretrained(tmp_path / "f32")
    model.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    size = {n: (tmp_path / n / "model.safetensors").stat().st_size for n in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]
    loaded = GridSVLAPolicy.from_pretrained(tmp_path / "f16").eval()
    rounded = GridSVLAPolicy(cfg).eval()
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.state_dict().items()})
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    b = batch_for(cfg)
    torch.testing.assert_close(loaded.predict_action(b), rounded.predict_action(b), rtol=0, atol=0)
    assert not torch.equal(loaded.predict_action(b), model.predict_action(b))  # the rounding is real
    loaded.save_pretrained(tmp_path / "again", dtype=torch.float16)
    from safetensors.torch import load_file  # (the header's metadata order is not deterministic: compare tensors)

    again, first = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("again", "f16"))
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) and again[k].dtype == first[k].dtype
                                                for k in first)


def test_save_load_round_trip_is_strict(tmp_path) -> None:
    cfg = tiny(reducer="grids", cond_on_language=True)
    model = GridSVLAPolicy(cfg).eval()
    model.set_normalization(torch.arange(8.0), torch.full((8,), 2.0), torch.ones(7), torch.full((7,), 3.0))
    b = batch_for(cfg)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = GridSVLAPolicy.from_pretrained(tmp_path / "ckpt", expected_config=cfg).eval()
    assert loaded.config == cfg
    torch.testing.assert_close(loaded.predict_action(b), model.predict_action(b), rtol=0, atol=0)
    torch.testing.assert_close(loaded.action_std, torch.full((7,), 3.0))

    with pytest.raises(ValueError, match="does not match the expected config.*k: checkpoint 4 vs expected 8"):
        GridSVLAPolicy.from_pretrained(tmp_path / "ckpt", expected_config=tiny(reducer="grids", k=8,
                                                                                cond_on_language=True))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GridSVLAPolicy.from_pretrained(tmp_path)
    # another model's checkpoint
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "siglip_vision_model"}))
    with pytest.raises(ValueError, match="not a grids_vla checkpoint.*siglip"):
        GridSVLAPolicy.from_pretrained(other)
    # weights that do not belong to the config: a dense model's weights under a GridS config
    dense = tmp_path / "dense"
    GridSVLAPolicy(tiny(reducer="dense")).save_pretrained(dense)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    (mixed / "model.safetensors").write_bytes((dense / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"missing keys \['reducer\.camera_embed"):
        GridSVLAPolicy.from_pretrained(mixed)
    # same names, different shapes
    wide = tmp_path / "wide"
    GridSVLAPolicy(tiny(reducer="grids", cond_on_language=True, chunk=6)).save_pretrained(wide)
    (wide / "config.json").write_text((tmp_path / "ckpt" / "config.json").read_text())
    with pytest.raises(ValueError, match="shapes that do not match.*action_queries"):
        GridSVLAPolicy.from_pretrained(wide)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


# ----------------------------------------------------------------------------------------------------- training


def test_sampler_and_augmentation_are_deterministic() -> None:
    s = StepSampler(10, 4, seed=3)
    first = [s.batch(i) for i in range(5)]
    assert first == [StepSampler(10, 4, seed=3, start_step=2).batch(i) for i in range(5)]
    assert sorted(first[0] + first[1] + first[2][:2]) == list(range(10))  # one epoch covers every frame once
    ranks = [StepSampler(10, 2, seed=3, rank=r, world=2).batch(0) for r in (0, 1)]
    assert ranks[0] + ranks[1] == first[0]
    img = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    a = augment(img, torch.Generator().manual_seed(0), 2, 0.2)
    b = augment(img, torch.Generator().manual_seed(0), 2, 0.2)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, img.float() / 255)
    assert torch.equal(augment(img, torch.Generator(), 0, 0.0), img.float() / 255)


def test_start_frames_are_drawn_start_weight_times_as_often() -> None:
    from grids_vla.experiments.train import start_pool

    index = [(f, d, t) for f in range(2) for d in range(2) for t in range(5)]  # 4 demos of 5 frames
    assert start_pool(index, 0, 1) is None and start_pool(index, 2, 1) is None
    pool = start_pool(index, 2, 3)
    assert len(pool) == 4 * (2 * 3 + 3)
    counts = {i: pool.count(i) for i in range(len(index))}
    assert all(counts[i] == (3 if index[i][2] < 2 else 1) for i in counts)
    s = StepSampler(len(index), 9, seed=0, pool=pool)
    epoch = [i for step in range(4) for i in s.batch(step)]  # 36 draws: one pass over the pool
    assert sorted(epoch) == sorted(pool)
    assert s.batch(5) == StepSampler(len(index), 9, seed=0, start_step=5, pool=pool).batch(5)
    for bad, match in ((dict(start_frames=4), "go together"), (dict(start_weight=3), "go together"),
                       (dict(start_frames=-1, start_weight=2), "start_frames must be a non-negative int"),
                       (dict(start_frames=2, start_weight=0), "start_weight must be a positive int")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_training_with_start_frames_draws_them_and_resume_keeps_the_setting(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    common = dict(start_frames=3, start_weight=4)
    train(_small(data_dir, out, stop_after=2, **common), tiny(instructions=()))
    # 4 demos of 12 frames: 3 frames x 4 + 9 frames each
    assert "(each demo's first 3 x4: 84 draws an epoch)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="resume must keep the run's settings.*start_weight"):
        train(_small(data_dir, out, resume="latest", start_frames=3, start_weight=2))
    assert train(_small(data_dir, out, resume="latest", **common))["step"] == 4
    # a checkpoint from before these fields existed resumes as a run without them
    old = tmp_path / "old"
    train(_small(data_dir, old, stop_after=2), tiny(instructions=()))
    path = latest_checkpoint(old) / "training_state.pt"
    state = torch.load(path, weights_only=True)
    for name in ("start_frames", "start_weight"):
        del state["train_config"][name]
    torch.save(state, path)
    assert train(_small(data_dir, old, resume="latest"))["step"] == 4
    with pytest.raises(ValueError, match="start_frames"):
        train(_small(data_dir, old, resume="latest", steps=6, **common))
    capsys.readouterr()
    assert cli_main(["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--start-frames", "3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--start-frames 3 and --start-weight 1 go together" in err[0], err


def _read_metrics(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_training_learns_and_resume_continues_exactly(data_dir, tmp_path) -> None:
    cfg = tiny(reducer="grids", instructions=())
    common = dict(data=str(data_dir), steps=8, batch_size=8, lr=3e-3, warmup_steps=2, num_workers=0, save_every=3,
                  log_every=4, seed=1)
    full = train(TrainConfig(out=str(tmp_path / "full"), **common), cfg)
    assert full["step"] == 8 and len(full["losses"]) == 8 and all(np.isfinite(full["losses"]))
    assert full["checkpoint"].name == "step_0000008"
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == [
        "latest", "step_0000003", "step_0000006", "step_0000008"]
    model = GridSVLAPolicy.from_pretrained(full["checkpoint"])
    assert model.config.instructions == tuple(sorted(INSTRUCTIONS))  # filled from the data
    assert model.action_std[6] > 0.9  # normalisation stats came from the data (gripper is +-1)

    part = tmp_path / "part"
    stopped = train(TrainConfig(out=str(part), stop_after=5, **common), cfg)
    assert stopped["step"] == 5 and latest_checkpoint(part).name == "step_0000003"
    assert stopped["losses"] == full["losses"][:5]
    resumed = train(TrainConfig(out=str(part), resume="latest", **common))
    assert resumed["step"] == 8
    # the run continues from step 3: same batches, same augmentation, same optimizer state -> bit-identical losses
    assert resumed["losses"] == full["losses"][3:]
    state = torch.load(resumed["checkpoint"] / "training_state.pt", weights_only=True)
    assert state["step"] == 8
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {8}  # optimizer steps, not restarts
    assert state["scheduler"]["last_epoch"] == 8
    rows = _read_metrics(part)
    assert [int(r["step"]) for r in rows] == list(range(1, 9))  # steps 4-5 of the stopped run were replaced
    assert [r["loss"] for r in rows] == [f"{x:.6f}" for x in full["losses"]]  # as logged: 6 decimals
    a = GridSVLAPolicy.from_pretrained(resumed["checkpoint"]).state_dict()
    b = GridSVLAPolicy.from_pretrained(full["checkpoint"]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match="resume must keep the run's settings.*lr"):
        train(TrainConfig(out=str(part), resume="latest", **(common | {"lr": 1e-3})))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(TrainConfig(out=str(tmp_path / "none"), resume="latest", **common))
    with pytest.raises(ValueError, match="64 px images but image_size=128"):
        train(TrainConfig(out=str(tmp_path / "bad"), **common), tiny(image_size=128))


def test_preloaded_images_equal_the_file_reads_and_train_the_same(data_dir, tmp_path) -> None:
    from grids_vla.envs.libero.data import LiberoDemoDataset
    from grids_vla.policy.training import find_demo_files

    ds = LiberoDemoDataset(find_demo_files(data_dir), chunk=4)
    from_files = [ds[i] for i in range(len(ds))]
    assert ds.image_bytes() == sum(2 * n * SIZE * SIZE * 3 for n in ds.lengths.values())
    ds.preload()
    assert len(ds._images) == 2 * len(ds.lengths)
    for i, item in enumerate(from_files):
        again = ds[i]
        assert again.keys() == item.keys()
        for key, value in item.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(again[key], value, rtol=0, atol=0)
            else:
                assert again[key] == value

    cfg = tiny(reducer="grids", instructions=())
    common = dict(data=str(data_dir), steps=4, batch_size=8, lr=3e-3, warmup_steps=1, num_workers=1, save_every=4,
                  log_every=2, seed=3)
    log = io.StringIO()
    loaded = train(TrainConfig(out=str(tmp_path / "yes"), preload="yes", **common), cfg, log=log)
    assert "preloaded" in log.getvalue()
    plain = train(TrainConfig(out=str(tmp_path / "no"), preload="no", **common), cfg)
    assert loaded["losses"] == plain["losses"]
    with pytest.raises(ValueError, match="preload must be one of"):
        TrainConfig(data=str(data_dir), preload="always")


def test_training_reduces_the_loss(data_dir, tmp_path) -> None:
    cfg = tiny(reducer="grids", instructions=())
    res = train(TrainConfig(data=str(data_dir), out=str(tmp_path / "r"), steps=40, batch_size=16, lr=3e-3,
                            warmup_steps=4, num_workers=0, save_every=100, log_every=20, shift=2), cfg)
    first, last = np.mean(res["losses"][:4]), np.mean(res["losses"][-8:])
    assert last < 0.8 * first, (first, last)


def test_cli_train_with_config_file_and_workers(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"vision_dim": 32, "vision_depth": 1, "vision_heads": 2, "dim": 32, "depth": 2,
                                "heads": 2, "chunk": 4, "batch_size": 4, "steps": 3, "save_every": 2}))
    argv = ["train", "--config", str(conf), "--data", str(data_dir), "--out", str(out), "--reducer", "grids",
            "--k", "4", "--predictor", "attention", "--cond-on-language", "--num-workers", "1", "--log-every", "1"]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    assert "samples/s" in err and "step 3/3" in err and "training grids (k=4) on" in err
    model = GridSVLAPolicy.from_pretrained(latest_checkpoint(out))
    c = model.config
    assert (c.image_size, c.k, c.predictor, c.cond_on_language, c.dim) == (SIZE, 4, "attention", True, 32)
    assert [int(r["step"]) for r in _read_metrics(out)] == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown config fields"):
        conf.write_text(json.dumps({"depht": 2}))
        cli_main(["--debug", "train", "--config", str(conf), "--data", str(data_dir), "--out", str(out)])
    with pytest.raises(ValueError, match="does not match the expected config"):
        cli_main(["--debug", "train", "--data", str(data_dir), "--out", str(out), "--resume", "--k", "8"])


def _logged_rows(out: Path) -> dict[int, dict]:
    """The metric rows a (possibly killed) run wrote completely, by step: a torn last line is left out."""
    text = (out / "metrics.csv").read_text() if (out / "metrics.csv").is_file() else ""
    whole = "".join(line for line in text.splitlines(keepends=True) if line.endswith("\n"))
    return {int(r["step"]): r for r in csv.DictReader(io.StringIO(whole))}


def _ckpt_step(out: Path) -> int:
    return int(latest_checkpoint(out).name.split("_")[1])


def test_kill_9_mid_run_then_resume(data_dir, tmp_path) -> None:
    """SIGKILL a training process between two checkpoints, after it logged steps past the last one; the resumed run
    redoes those steps with bit-identical results, and ends exactly where an uninterrupted run does."""
    train_args = ["--data", str(data_dir), "--steps", "400", "--save-every", "5", "--batch-size", "4",
                  "--num-workers", "0"]
    fresh_args = ["--log-every", "50", "--vision-dim", "16", "--vision-depth", "1", "--vision-heads", "1",
                  "--dim", "16", "--depth", "2", "--heads", "1", "--chunk", "2", "--k", "4"]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # every process alike: same kernels, same floating-point results

    def cli(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "grids_vla.cli", "train", *train_args, "--out", str(out), *extra]

    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(out, *fresh_args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, killed = time.time() + 120, False
    try:
        while time.time() < deadline and proc.poll() is None and not killed:
            if latest_checkpoint(out) is not None and _ckpt_step(out) >= 10:
                proc.send_signal(signal.SIGSTOP)  # frozen: what it has written now is what a kill leaves behind
                if max(_logged_rows(out), default=0) > _ckpt_step(out):  # steps logged past the checkpoint
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                else:
                    proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
    finally:
        if not killed:
            proc.kill()
        proc.wait()
    assert killed, proc.stderr.read().decode()[-2000:]  # a real mid-run kill, not a finished or crashed run
    killed_at = _ckpt_step(out)
    assert 10 <= killed_at < 400
    before = _logged_rows(out)
    redone = [s for s in before if s > killed_at]  # steps run both before the kill and after the resume
    assert redone and max(redone) <= killed_at + 5

    stop = ["--stop-after", str(killed_at + 5)]
    resumed = subprocess.run(cli(out, "--resume", "--log-every", "400", *stop), env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    reference = tmp_path / "uninterrupted"
    ran = subprocess.run(cli(reference, *fresh_args, *stop), env=env, capture_output=True)
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]

    after, ref = _logged_rows(out), _logged_rows(reference)
    assert list(after) == list(ref) == list(range(1, killed_at + 6))  # one continuous curve, no repeats
    same = ("loss", "lr", "grad_norm")
    assert all(after[s] == before[s] for s in range(1, killed_at + 1))  # the history up to the checkpoint is kept
    for s in redone:  # the redone steps log exactly what the killed run logged for them
        assert [after[s][k] for k in same] == [before[s][k] for k in same], s
    for s in after:  # and the whole run logs exactly what the uninterrupted one does
        assert [after[s][k] for k in same] == [ref[s][k] for k in same], s
    # bit-identical end state: weights, optimizer moments, schedule and RNG
    ckpt, ref_ckpt = latest_checkpoint(out), latest_checkpoint(reference)
    assert ckpt.name == ref_ckpt.name == f"step_{killed_at + 5:07d}"
    a, b = GridSVLAPolicy.from_pretrained(ckpt).state_dict(), GridSVLAPolicy.from_pretrained(ref_ckpt).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    ref_state = torch.load(ref_ckpt / "training_state.pt", weights_only=True)
    assert state["step"] == killed_at + 5
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {killed_at + 5}
    for i, moments in state["optimizer"]["state"].items():
        for k, v in moments.items():
            assert torch.equal(v, ref_state["optimizer"]["state"][i][k]), (i, k)
    assert state["scheduler"] == ref_state["scheduler"]


class _FakeSentenceEncoder:
    """Stands in for the frozen MiniLM (a deterministic 384-d vector per string) and counts what it encodes."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts, convert_to_tensor: bool, normalize_embeddings: bool) -> torch.Tensor:
        self.seen.extend(texts)
        vecs = torch.stack([torch.randn(384, generator=torch.Generator().manual_seed(len(t) * 31 + ord(t[0])))
                            for t in texts])
        return torch.nn.functional.normalize(vecs, dim=-1)


def test_frozen_sentence_encoder_language_is_cached_and_takes_new_instructions(monkeypatch, tmp_path) -> None:
    import grids_vla.policy.modeling_grids_vla as modeling

    fake = _FakeSentenceEncoder()
    monkeypatch.setattr(modeling, "_minilm", lambda: fake)
    cfg = tiny(language="minilm", instructions=(), reducer="grids", cond_on_language=True)
    model = GridSVLAPolicy(cfg)
    b = batch_for(cfg)
    loss, _ = model.compute_loss(b)
    loss.backward()
    assert model.lang_proj.weight.grad.abs().sum() > 0
    assert not hasattr(model, "lang_embed") and sorted(fake.seen) == sorted(INSTRUCTIONS)
    model.compute_loss(b | {"instruction": ["open the drawer"] * 3})  # unseen text works: it is encoded, not looked up
    model.compute_loss(b)
    assert len(fake.seen) == 3  # each string encoded once, then cached
    model.eval().save_pretrained(tmp_path / "m")
    loaded = GridSVLAPolicy.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(loaded.predict_action(b), model.predict_action(b), rtol=0, atol=0)


def test_plain_loop_without_accelerate_matches(data_dir, tmp_path, monkeypatch) -> None:
    import grids_vla.policy.training as training

    cfg = tiny(reducer="dense", instructions=())
    common = dict(data=str(data_dir), steps=3, batch_size=4, num_workers=0, save_every=3, seed=2)
    default = train(TrainConfig(out=str(tmp_path / "a"), **common), cfg)
    monkeypatch.setattr(training, "_accelerator", training._Plain)
    plain = train(TrainConfig(out=str(tmp_path / "b"), **common), cfg)
    assert plain["step"] == 3 and plain["checkpoint"].name == "step_0000003"
    np.testing.assert_allclose(plain["losses"], default["losses"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ flow-matching head


def test_flow_head_trains_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    cfg = tiny(action_head="flow", flow_steps=4)
    model = GridSVLAPolicy(cfg)
    b = batch_for(cfg, b=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss, out = model.compute_loss(b, generator=torch.Generator().manual_seed(step % 3))
        assert out.actions.shape == (4, cfg.chunk, cfg.action_dim)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name in ("action_in.weight", "time_mlp.0.weight", "action_head.weight", "action_queries",
                         "vision.patch.weight", "state_proj.0.weight"):
                assert model.get_parameter(name).grad.abs().sum() > 0, name
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_flow_sampling_shape_determinism_and_prefix_reuse(monkeypatch) -> None:
    cfg = tiny(action_head="flow", flow_steps=6, reducer="grids", k=16, fastv_keep=8, fastv_layer=0)
    model = GridSVLAPolicy(cfg).eval()
    model.set_normalization(torch.zeros(8), torch.ones(8), torch.full((7,), 0.5), torch.full((7,), 2.0))
    b = batch_for(cfg, b=2)
    a = model.predict_action(b, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, cfg.chunk, cfg.action_dim) and torch.isfinite(a).all()
    assert torch.equal(a, model.predict_action(b, generator=torch.Generator().manual_seed(7)))
    assert not torch.allclose(a, model.predict_action(b, generator=torch.Generator().manual_seed(8)))
    calls = {"prefix": 0, "velocity": 0}
    prefix_cache, velocity = model._prefix_cache, model._velocity

    def count(name, fn):
        def wrapped(*args):
            calls[name] += 1
            return fn(*args)
        return wrapped

    monkeypatch.setattr(model, "_prefix_cache", count("prefix", prefix_cache))
    monkeypatch.setattr(model, "_velocity", count("velocity", velocity))
    out = model({c: b[c] for c in cfg.cameras}, b["state"], b["instruction"])
    assert calls == {"prefix": 1, "velocity": 6}  # the prefix runs once, then one action-token pass per Euler step
    assert out.coords.shape == (2, 2, 16, 2) and out.loss is None


def test_euler_integration_is_exact_on_analytic_fields(monkeypatch) -> None:
    from grids_vla.policy.modeling_grids_vla import euler_integrate, sample_flow_time

    g = torch.Generator().manual_seed(0)
    x1, a = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    # the straight path's conditional field (x - a) / t: each Euler step lands exactly on the line, so x_0 = a
    for steps in (1, 3, 10):
        torch.testing.assert_close(euler_integrate(lambda x, t: (x - a) / t[:, None, None], x1, steps), a,
                                   rtol=0, atol=1e-5)
    # dx/dt = x, integrated from t = 1 down to 0: Euler gives x_1 * (1 - 1/N)^N in closed form
    for steps in (1, 2, 10):
        torch.testing.assert_close(euler_integrate(lambda x, t: x, x1, steps), x1 * (1 - 1 / steps) ** steps)
    seen = []
    euler_integrate(lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x), x1, 4)
    assert seen == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError, match="positive int"):
        euler_integrate(lambda x, t: x, x1, 0)
    t = sample_flow_time(20000, torch.Generator().manual_seed(0))
    assert t.min() >= 1e-3 and t.max() <= 1.0
    assert abs(t.mean().item() - (1e-3 + 0.999 * 0.6)) < 0.01  # Beta(1.5, 1) has mean 0.6

    # the same field as a stub for the policy's velocity: predict_action returns the un-normalised a
    cfg = tiny(action_head="flow", flow_steps=7)
    model = GridSVLAPolicy(cfg).eval()
    model.set_normalization(torch.zeros(8), torch.ones(8), torch.full((7,), 0.5), torch.full((7,), 2.0))
    target = a[:2]
    monkeypatch.setattr(model, "_velocity", lambda cache, x, t: (x - target) / t[:, None, None])
    got = model.predict_action(batch_for(cfg, b=2), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, target * 2.0 + 0.5, rtol=0, atol=1e-5)


def test_flow_save_load_round_trip_and_old_checkpoints(tmp_path) -> None:
    cfg = tiny(action_head="flow", flow_steps=3)
    model = GridSVLAPolicy(cfg).eval()
    b = batch_for(cfg)
    model.save_pretrained(tmp_path / "flow")
    meta = json.loads((tmp_path / "flow" / "config.json").read_text())
    assert meta["config"]["action_head"] == "flow" and meta["config"]["flow_steps"] == 3
    loaded = GridSVLAPolicy.from_pretrained(tmp_path / "flow", expected_config=cfg).eval()
    assert loaded.config == cfg
    torch.testing.assert_close(loaded.predict_action(b, generator=torch.Generator().manual_seed(0)),
                               model.predict_action(b, generator=torch.Generator().manual_seed(0)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="action_head: checkpoint 'flow' vs expected 'l1'"):
        GridSVLAPolicy.from_pretrained(tmp_path / "flow", expected_config=tiny(flow_steps=3))
    # flow weights under an l1 config: strict loading names the extra weights
    meta["config"]["action_head"] = "l1"
    (tmp_path / "flow" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"unexpected keys \['action_in"):
        GridSVLAPolicy.from_pretrained(tmp_path / "flow")
    # a checkpoint written before the fields existed loads as the L1 head
    l1 = GridSVLAPolicy(tiny()).eval()
    l1.save_pretrained(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    for name in ("action_head", "flow_steps", "vision_stem", "state_dropout"):
        del meta["config"][name]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = GridSVLAPolicy.from_pretrained(tmp_path / "old").eval()
    assert old.config.action_head == "l1" and old.config.flow_steps == 10 and old.config.vision_stem == "patch"
    assert old.config.state_dropout == 0.0
    torch.testing.assert_close(old.predict_action(b), l1.predict_action(b), rtol=0, atol=0)


def test_l2_head_is_the_l1_architecture_with_a_squared_error_loss() -> None:
    """``action_head="l2"``: the same weights as ``"l1"`` (a checkpoint's weights load either way), the loss is the
    mean squared error of the same prediction, and loading it under an l1 config names the difference."""
    l1, l2 = GridSVLAPolicy(tiny()), GridSVLAPolicy(tiny(action_head="l2"))
    l2.load_state_dict(l1.state_dict(), strict=True)
    b = batch_for(tiny())
    out1, out2 = l1.compute_loss(b)[1], l2.compute_loss(b)[1]
    torch.testing.assert_close(out1.actions, out2.actions, rtol=0, atol=0)
    target = (b["action"] - l2.action_mean) / l2.action_std
    torch.testing.assert_close(l2.compute_loss(b)[0], ((out2.actions - target) ** 2).mean())
    torch.testing.assert_close(l1.compute_loss(b)[0], (out1.actions - target).abs().mean())
    with pytest.raises(ValueError, match="this policy's head is 'l2'"):
        l2({c: b[c] for c in l2.config.cameras}, b["state"], b["instruction"], noise=torch.zeros(3, 4, 7))


def test_flow_head_bad_input() -> None:
    with pytest.raises(ValueError, match="action_head must be one of"):
        tiny(action_head="diffusion")
    with pytest.raises(ValueError, match="flow_steps must be a positive int"):
        tiny(action_head="flow", flow_steps=0)
    cfg = tiny()
    b = batch_for(cfg)
    imgs = {c: b[c] for c in cfg.cameras}
    with pytest.raises(ValueError, match="for action_head='flow'"):
        GridSVLAPolicy(cfg)(imgs, b["state"], b["instruction"], noise=torch.zeros(3, 4, 7))
    flow = GridSVLAPolicy(tiny(action_head="flow"))
    with pytest.raises(ValueError, match="noise must have shape"):
        flow(imgs, b["state"], b["instruction"], noise=torch.zeros(3, 5, 7))
    with pytest.raises(ValueError, match="action targets have shape"):
        flow(imgs, b["state"], b["instruction"], target=torch.zeros(3, 2, 7))


def test_cli_trains_a_flow_policy_and_resumes_exactly(data_dir, tmp_path) -> None:
    common = ["--data", str(data_dir), "--steps", "4", "--save-every", "2", "--batch-size", "4", "--num-workers", "0",
              "--vision-dim", "16", "--vision-depth", "1", "--vision-heads", "1", "--dim", "16", "--depth", "2",
              "--heads", "1", "--chunk", "2", "--k", "4"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli_main(["train", "--out", str(full), "--action-head", "flow", "--flow-steps", "3", *common]) == 0
    model = GridSVLAPolicy.from_pretrained(latest_checkpoint(full))
    assert (model.config.action_head, model.config.flow_steps) == ("flow", 3)
    assert cli_main(["train", "--out", str(part), "--action-head", "flow", "--flow-steps", "3", "--stop-after", "3",
                     *common]) == 0
    assert cli_main(["train", "--out", str(part), "--resume", *common]) == 0
    # noise and flow times are drawn per step from the seeded step generator: the resumed run repeats the losses
    logged = [[(r["step"], r["loss"], r["grad_norm"]) for r in _read_metrics(run)] for run in (part, full)]
    assert logged[0] == logged[1] and len(logged[0]) == 4  # bit-identical as logged
    sample = batch_for(model.config, b=1)
    assert model.eval().predict_action(sample).shape == (1, 2, 7)


def test_device_flag_trains_where_asked_and_a_resume_runs_where_it_is(data_dir, tmp_path, monkeypatch) -> None:
    from grids_vla.experiments.train import STATE_NAME, _Plain

    with pytest.raises(ValueError, match=r"^--device must be one of auto, cpu, cuda, got 'gpu'$"):
        TrainConfig(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: torch .* sees no CUDA device"):
        TrainConfig(device="cuda")
    assert _Plain("auto").device.type == "cpu" and _Plain("cpu").device.type == "cpu"  # the loop without accelerate
    out = tmp_path / "run"
    train(_small(data_dir, out, stop_after=2, device="cpu"), tiny(instructions=()))
    assert json.loads((out / "train_config.json").read_text())["train"]["device"] == "cpu"
    # a run started on a GPU machine resumes here: the checkpoint's settings fill the unset flags, but not its device
    state_file = latest_checkpoint(out) / STATE_NAME
    state = torch.load(state_file, weights_only=True)
    state["train_config"]["device"] = "cuda"
    torch.save(state, state_file)
    assert cli_main(["train", "--out", str(out), "--resume", "--data", str(data_dir)]) == 0
    assert latest_checkpoint(out).name == "step_0000004"
    assert json.loads((out / "train_config.json").read_text())["train"]["device"] == "cpu"


# ------------------------------------------------------------------------------------------------- tensorboard


def test_tensorboard_events_hold_the_metrics_and_resume_replaces_steps(data_dir, tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed: pip install 'grids-vla[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb_run"
    args = ["train", "--data", str(data_dir), "--out", str(out), "--steps", "4", "--save-every", "2",
            "--batch-size", "4", "--num-workers", "0", "--vision-dim", "16", "--vision-depth", "1", "--vision-heads",
            "1", "--dim", "16", "--depth", "2", "--heads", "1", "--chunk", "2", "--k", "4", "--tensorboard"]
    assert cli_main([*args, "--stop-after", "3"]) == 0  # a 3-step run: steps 1-3 logged, last checkpoint at step 2
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    assert cli_main([*args, "--resume"]) == 0  # step 3 again, then 4
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"train/loss", "train/lr", "train/samples_per_s", "train/grad_norm"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]  # the stopped run's step 3 was purged, not shown twice
    np.testing.assert_allclose([e.value for e in loss], [float(r["loss"]) for r in _read_metrics(out)], atol=1e-5)


def test_tensorboard_missing_is_a_clear_error_at_config_time(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TrainConfig(data="anything", tensorboard=True)
    assert TrainConfig(data="anything").tensorboard is False


# ------------------------------------------------------------------------------------------- run folder and resume


def _small(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), steps=4, batch_size=4, lr=3e-3, warmup_steps=2, num_workers=0,
                save_every=2, log_every=100, seed=1, preload="no")
    return TrainConfig(**(base | kw))


def _folder(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_a_new_run_never_goes_into_a_folder_holding_another(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(_small(data_dir, out), tiny(instructions=()))
    before = _folder(out)
    assert "checkpoints/step_0000004/model.safetensors" in before
    # another config (or the same one) without --resume: refused, the folder untouched
    for kw in ({"seed": 2, "steps": 2}, {}):
        with pytest.raises(FileExistsError, match=r"already holds a training run .*last checkpoint step_0000004.*"
                                                  r"--resume.*--overwrite"):
            train(_small(data_dir, out, **kw), tiny(instructions=(), k=2))
    assert _folder(out) == before
    capsys.readouterr()
    argv = ["train", "--data", str(data_dir), "--out", str(out), "--steps", "2", "--vision-dim", "16", "--dim", "16",
            "--vision-heads", "1", "--heads", "1", "--k", "4", "--chunk", "2", "--num-workers", "0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"--out {out} already holds a training run" in err[0], err
    assert _folder(out) == before
    # --overwrite: only the new run is left (no later checkpoint of the old one beside it)
    res = train(_small(data_dir, out, seed=2, steps=2, overwrite=True), tiny(instructions=(), k=2))
    assert res["checkpoint"].name == "step_0000002"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step_0000002"]
    assert [int(r["step"]) for r in _read_metrics(out)] == [1, 2]
    assert json.loads((out / "train_config.json").read_text())["train"]["seed"] == 2
    assert not list(tmp_path.glob(".old_*"))
    # a run stopped part-way is a run too
    stopped = tmp_path / "stopped"
    train(_small(data_dir, stopped, stop_after=3), tiny(instructions=()))
    with pytest.raises(FileExistsError, match="last checkpoint step_0000002"):
        train(_small(data_dir, stopped), tiny(instructions=()))
    # a folder of something else is never deleted; --overwrite and --resume exclude each other
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no training run \\(notes.txt\\)"):
        train(_small(data_dir, other, overwrite=True), tiny(instructions=()))
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="give one of them"):
        _small(data_dir, out, overwrite=True, resume="latest")


def test_overwrite_killed_while_deleting_leaves_the_old_run_whole_or_gone(data_dir, tmp_path, monkeypatch) -> None:
    import grids_vla.experiments.train as train_module

    out = tmp_path / "run"
    train(_small(data_dir, out), tiny(instructions=()))
    before = _folder(out)
    real_rmtree = train_module.shutil.rmtree

    def killed(path, ignore_errors=False):
        if not ignore_errors:  # the delete of the renamed old run
            raise KeyboardInterrupt
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(train_module.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_small(data_dir, out, seed=2, overwrite=True), tiny(instructions=()))
    assert not out.exists() and _folder(tmp_path / ".old_run") == before  # moved aside whole, nothing new in --out
    monkeypatch.setattr(train_module.shutil, "rmtree", real_rmtree)
    train(_small(data_dir, out, seed=2, overwrite=True), tiny(instructions=()))
    assert json.loads((out / "train_config.json").read_text())["train"]["seed"] == 2


def test_resume_checks_the_data_by_fingerprint_not_by_path(data_dir, tmp_path, monkeypatch) -> None:
    import shutil

    cfg = tiny(instructions=())
    full = train(_small(data_dir, tmp_path / "full"), cfg)
    part = tmp_path / "part"
    train(_small(data_dir, part, stop_after=2), cfg)
    legacy = tmp_path / "legacy"  # a checkpoint written before fingerprints: compared by resolved path
    shutil.copytree(part, legacy)
    state_path = latest_checkpoint(legacy) / "training_state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["data_fingerprint"], state["schedule_steps"]
    torch.save(state, state_path)

    changed = tmp_path / "changed"  # one demo more: other data
    shutil.copytree(data_dir, changed)
    _write_task(changed / "task9_demo.hdf5", INSTRUCTIONS[0], demos=1, steps=12, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match=rf"--data {changed} is not the data this run was trained on"):
        train(_small(changed, tmp_path / "elsewhere", resume=str(latest_checkpoint(legacy))))

    monkeypatch.chdir(data_dir.parent)
    relative = os.path.join(".", data_dir.name)  # the same folder by another spelling
    resumed = train(_small(relative, part, resume="latest"))
    assert resumed["losses"] == full["losses"][2:]
    assert train(_small(relative, legacy, resume="latest"))["losses"] == full["losses"][2:]

    copy = tmp_path / "copy"  # the same demos elsewhere: same fingerprint
    shutil.copytree(data_dir, copy)
    again = tmp_path / "again"
    train(_small(data_dir, again, stop_after=2), cfg)
    assert train(_small(copy, again, resume="latest"))["losses"] == full["losses"][2:]

    three = tmp_path / "three"
    train(_small(data_dir, three, stop_after=2), cfg)
    with pytest.raises(ValueError, match=rf"--data {changed} holds other demos than the run was trained on "
                                         r"\(3 files / 5 demos / 60 frames vs 2 files / 4 demos / 48 frames"):
        train(_small(changed, three, resume="latest"))


def test_resume_with_more_steps_extends_the_run_at_the_lr_floor(data_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(_small(data_dir, out, min_lr_ratio=0.25), tiny(instructions=()))
    rows = _read_metrics(out)
    argv = ["train", "--data", str(data_dir), "--out", str(out), "--resume", "--steps", "7", "--log-every", "1"]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    assert "steps 4->7" in err and "cosine to 0.25 x that at step 4, then held there to step 7" in err
    longer = _read_metrics(out)
    assert longer[:4] == rows and [int(r["step"]) for r in longer] == list(range(1, 8))
    assert [r["lr"] for r in longer[4:]] == [f"{3e-3 * 0.25:.3e}"] * 3  # the planned cosine ended at step 4
    assert float(longer[2]["lr"]) > float(longer[3]["lr"])  # it did decay before
    assert latest_checkpoint(out).name == "step_0000007"
    state = torch.load(latest_checkpoint(out) / "training_state.pt", weights_only=True)
    assert state["schedule_steps"] == 4 and state["train_config"]["steps"] == 7
    train(_small(data_dir, out, min_lr_ratio=0.25, steps=8, resume="latest"))  # the planned length is kept
    assert _read_metrics(out)[-1]["lr"] == f"{3e-3 * 0.25:.3e}"
    with pytest.raises(ValueError, match="--steps 5 ends before the checkpoint's step 8"):
        train(_small(data_dir, out, min_lr_ratio=0.25, steps=5, resume="latest"))


def test_a_chunk_longer_than_the_shortest_demo_is_refused(data_dir, tmp_path, capsys) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    short = data / "task5_demo.hdf5"
    _write_task(short, INSTRUCTIONS[0], demos=2, steps=5, rng=np.random.default_rng(2))
    with pytest.raises(ValueError, match=rf"--chunk 6 is longer than the shortest demo \({short} demo_0: 5 steps\); "
                                         r"use --chunk 5 or less"):
        train(_small(data, tmp_path / "a"), tiny(instructions=(), chunk=6))
    assert not (tmp_path / "a").exists()
    capsys.readouterr()
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--chunk", "6"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"({short} demo_0: 5 steps)" in err[0], err
    assert train(_small(data, tmp_path / "c", steps=1), tiny(instructions=(), chunk=5))["step"] == 1


def test_resume_is_exact_with_dropout(data_dir, tmp_path) -> None:
    """The global RNG (dropout) continues exactly where the checkpoint left it."""
    cfg = tiny(reducer="grids", instructions=(), dropout=0.2)
    common = dict(data=str(data_dir), steps=8, batch_size=8, lr=3e-3, warmup_steps=2, num_workers=0, save_every=3,
                  log_every=4, seed=1)
    full = train(TrainConfig(out=str(tmp_path / "full"), **common), cfg)
    train(TrainConfig(out=str(tmp_path / "part"), stop_after=5, **common), cfg)
    resumed = train(TrainConfig(out=str(tmp_path / "part"), resume="latest", **common))
    assert resumed["losses"] == full["losses"][3:]


@pytest.mark.parametrize("kw", [dict(), dict(predictor="attention"), dict(cond_on_language=True)])
def test_points_lr_scale_gives_the_coordinate_heads_their_own_learning_rate(kw) -> None:
    from grids_vla.policy.training import param_groups

    model = GridSVLAPolicy(tiny(points_lr_scale=10.0, **kw))
    heads = {id(p) for p in model.reducer.coordinate_head_parameters()}
    assert id(model.reducer.camera_embed.weight) in heads  # it only conditions the points
    groups = param_groups(model, TrainConfig(lr=1e-3))
    assert [g["lr"] for g in groups] == [1e-3, 1e-3, 1e-2, 1e-2]
    assert {id(p) for g in groups[2:] for p in g["params"]} == heads
    every = [id(p) for g in groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one group
    geometry = {id(p) for p in model.reducer.sampler.geometry.parameters()}
    assert not geometry & heads  # the geometry embedding shapes the tokens, not the points
    assert len(param_groups(GridSVLAPolicy(tiny(**kw)), TrainConfig(lr=1e-3))) == 2  # the default: two groups


def test_points_lr_scale_needs_predicted_points_and_is_kept_on_resume(data_dir, tmp_path, capsys) -> None:
    from grids_vla.policy.training import param_groups

    with pytest.raises(ValueError, match="points_lr_scale must be > 0, got 0"):
        tiny(points_lr_scale=0.0)
    with pytest.raises(ValueError, match="points_lr_scale is a GridS option; reducer 'dense'"):
        tiny(reducer="dense", points_lr_scale=10.0)
    with pytest.raises(ValueError, match="--points-lr-scale 10.0 needs GridS with predicted points"):
        param_groups(GridSVLAPolicy(tiny(points_lr_scale=10.0, reducer_kwargs={"coords": "fixed-grid"})),
                     TrainConfig())
    out = tmp_path / "run"
    train(_small(data_dir, out), tiny(instructions=(), points_lr_scale=10.0))
    state = torch.load(latest_checkpoint(out) / "training_state.pt", weights_only=True)
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert len(lrs) == 4 and lrs[2] == pytest.approx(10 * lrs[0]) and lrs[3] == pytest.approx(10 * lrs[1])
    assert GridSVLAPolicy.from_pretrained(latest_checkpoint(out)).config.points_lr_scale == 10.0
    assert train(_small(data_dir, out, steps=6, resume="latest"))["step"] == 6  # resumes with the 4 groups
    argv = ["train", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--steps", "1", "--batch-size", "2",
            "--num-workers", "0", "--preload", "no", "--reducer", "dense", "--points-lr-scale", "3"]
    assert cli_main(argv) == 2
    assert "points_lr_scale is a GridS option" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "least", "optional", "error"), [
    (3, 1, False, None), (0, 0, False, None), (None, 1, True, None),
    (0, 1, False, "n must be a positive int, got 0"), (-1, 0, False, "n must be a non-negative int, got -1"),
    (True, 1, False, "n must be a positive int, got True"), (2.0, 1, False, "n must be a positive int, got 2.0"),
    (None, 1, False, "n must be a positive int, got None"), (1, 2, False, "n must be an int >= 2, got 1")])
def test_check_counts_names_the_field_and_what_it_expected(value, least, optional, error) -> None:
    from types import SimpleNamespace

    from grids_vla.policy.configuration_grids_vla import check_counts

    obj = SimpleNamespace(m=5, n=value)
    if error is None:
        check_counts(obj, ("m", "n"), least=least, optional=optional)
    else:
        with pytest.raises(ValueError, match=f"^{re.escape(error)}$"):
            check_counts(obj, ("m", "n"), least=least, optional=optional)
