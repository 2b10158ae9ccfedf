"""Checks shared by ``test_pi0_grids.py`` and ``test_pi05_grids.py`` (one :class:`Variant` each)."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from lerobot.configs.policies import PreTrainedConfig

from conftest import ACTION_DIM, CAMERAS, DENSE_TOKENS, LANG_LEN, config_kwargs, make_batch

GRIDS_LOGGER = "lerobot_policy_grids"


@dataclass(frozen=True)
class Variant:
    """One upstream policy and its GridS counterpart."""

    type: str
    upstream_type: str
    config_cls: type
    policy_cls: type
    upstream_config_cls: type
    upstream_policy_cls: type

    def config(self, **overrides: Any) -> Any:
        return self.config_cls(**config_kwargs(**overrides))

    def policy(self, seed: int = 0, **overrides: Any) -> Any:
        torch.manual_seed(seed)
        return self.policy_cls(self.config(**overrides))

    def upstream(self, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return self.upstream_policy_cls(self.upstream_config_cls(**config_kwargs()))


def prefix_length(policy: Any, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(prefix tokens, valid prefix tokens) of ``embed_prefix`` for ``batch``."""
    images, img_masks = policy._preprocess_images(batch)
    tokens = batch["observation.language.tokens"]
    masks = batch["observation.language.attention_mask"]
    with torch.no_grad():
        embs, pad_masks, att_masks = policy.model.embed_prefix(images, img_masks, tokens, masks)
    assert pad_masks.shape == att_masks.shape == embs.shape[:2]
    return embs.shape[1], int(pad_masks[0].sum())


def check_registered(v: Variant) -> None:
    from lerobot.policies.factory import get_policy_class
    from lerobot.utils.import_utils import register_third_party_plugins

    register_third_party_plugins()
    assert v.type in PreTrainedConfig.get_known_choices()
    assert PreTrainedConfig.get_choice_class(v.type) is v.config_cls
    assert get_policy_class(v.type) is v.policy_cls
    assert v.config().type == v.type
    module = importlib.import_module(f"lerobot_policy_grids.processor_{v.type}")
    assert callable(getattr(module, f"make_{v.type}_pre_post_processors"))


@functools.cache
def _train_help() -> subprocess.CompletedProcess[str]:
    """``lerobot-train --help`` of this environment, run once per session (it imports all of LeRobot)."""
    exe = Path(sys.executable).with_name("lerobot-train")
    if not exe.exists():
        pytest.skip("lerobot-train is not installed")
    return subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=240)


def check_train_help(v: Variant) -> None:
    run = _train_help()
    if run.returncode and "is required but not installed" in run.stderr:
        pytest.skip("lerobot-train needs the lerobot[training] extra")
    assert run.returncode == 0, run.stderr[-2000:]
    choices = next(line for line in run.stdout.splitlines() if "--policy.type {" in line)
    assert v.type in choices.split("{", 1)[1].split("}")[0].split(",")


def check_bad_config(v: Variant) -> None:
    with pytest.raises(ValueError, match="grids_k"):
        v.config(grids_k=0)
    with pytest.raises(ValueError, match="grids_mode"):
        v.config(grids_mode="everywhere")


def check_old_lerobot_message(v: Variant, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under lerobot 0.4.x (no transformers fork) building fails early with a message naming the fix."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.4.4" if d == "lerobot" else real(d))
    with pytest.raises(RuntimeError, match="setup_lerobot312_env.sh"):
        v.policy()


def check_prefix_tokens(v: Variant) -> None:
    batch = make_batch()
    dense_len, dense_valid = prefix_length(v.upstream(), batch)
    assert dense_len == dense_valid == len(CAMERAS) * DENSE_TOKENS + LANG_LEN
    for k in (16, 4):
        policy = v.policy(grids_k=k)
        length, valid = prefix_length(policy, batch)
        assert length == valid == len(CAMERAS) * k + LANG_LEN
        out = policy.grids_last_output()
        assert list(out) == list(CAMERAS)
        assert all(o.tokens.shape == (2, k, policy.grids.sampler.dim) for o in out.values())


def check_empty_camera(v: Variant) -> None:
    """A configured empty camera slot is padded by upstream, resampled too, and masked out of the prefix."""
    policy = v.policy(empty_cameras=1)
    length, valid = prefix_length(policy, make_batch())
    assert length == 3 * 16 + LANG_LEN and valid == 2 * 16 + LANG_LEN


def check_training(v: Variant) -> None:
    policy = v.policy()
    policy.train()
    before = {k: p.detach().clone() for k, p in policy.grids.named_parameters()}
    coords_before = None
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3)
    for step in range(3):
        loss, info = policy.forward(make_batch(seed=step))
        assert torch.isfinite(loss) and loss.ndim == 0 and info["loss"] == pytest.approx(loss.item())
        opt.zero_grad()
        loss.backward()
        grads = {k: p.grad for k, p in policy.grids.named_parameters() if p.grad is not None}
        assert grads, "the GridS sampler received no gradient"
        assert any(g.abs().sum() > 0 for g in grads.values())
        assert all(torch.isfinite(g).all() for g in grads.values())
        coords = policy.grids_last_output()[CAMERAS[0]].coords
        coords_before = coords if coords_before is None else coords_before
        opt.step()
    changed = [k for k, p in policy.grids.named_parameters() if not torch.equal(p, before[k])]
    assert any("mlp" in k for k in changed), changed
    policy.forward(make_batch(seed=0))
    assert not torch.allclose(policy.grids_last_output()[CAMERAS[0]].coords, coords_before)


def _sampler_grads(policy: Any, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    policy.train()
    policy.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # flow-matching noise and time
    loss, _ = policy.forward(make_batch(seed=seed))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in policy.grids.named_parameters() if p.grad is not None}


def check_gradient_checkpointing(v: Variant) -> None:
    """``gradient_checkpointing=True``: the same loss and sampler gradients as without it (GridS runs outside the
    recomputed image closure, upstream checkpoints everything else)."""
    policy = v.policy(gradient_checkpointing=True)
    assert policy.model.gradient_checkpointing_enabled
    loss_ckpt, grads_ckpt = _sampler_grads(policy, seed=5)
    policy.model.gradient_checkpointing_disable()
    loss_plain, grads_plain = _sampler_grads(policy, seed=5)
    assert grads_ckpt and grads_ckpt.keys() == grads_plain.keys()
    assert any(g.abs().sum() > 0 for g in grads_ckpt.values())
    assert torch.allclose(loss_ckpt, loss_plain, rtol=1e-5, atol=1e-6)
    for k, g in grads_ckpt.items():
        assert torch.allclose(g, grads_plain[k], rtol=1e-4, atol=1e-6), k


def check_select_action(v: Variant) -> None:
    policy = v.policy()
    policy.reset()
    batch = {k: t for k, t in make_batch().items() if k != "action"}
    first = policy.select_action(batch)
    assert first.shape == (2, ACTION_DIM) and torch.isfinite(first).all()
    assert len(policy._action_queue) == policy.config.n_action_steps - 1
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (2, policy.config.chunk_size, ACTION_DIM)


def _chunk(policy: Any, seed: int = 1) -> torch.Tensor:
    batch = {k: t for k, t in make_batch().items() if k != "action"}
    torch.manual_seed(seed)
    return policy.predict_action_chunk(batch)


def check_round_trip(v: Variant, tmp_path: Path) -> None:
    policy = v.policy(grids_k=8, grids_predictor="attention", grids_per_camera=True)
    with torch.no_grad():  # make the sampler differ from a fresh one, so a silent re-init would show
        for p in policy.grids.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["type"] == v.type and saved["grids_k"] == 8 and saved["grids_predictor"] == "attention"
    assert saved["grids_per_camera"] is True
    loaded = v.policy_cls.from_pretrained(tmp_path)
    assert type(loaded) is v.policy_cls and loaded.config.grids_k == 8 and loaded.config.grids_predictor == "attention"
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    policy.eval()
    assert torch.equal(_chunk(policy), _chunk(loaded))


def check_upstream_checkpoint(v: Variant, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    upstream = v.upstream(seed=3)
    upstream.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["type"] == v.upstream_type
    for config in (None, v.config()):  # as from_pretrained(path) and as make_policy (a *_grids config) call it
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=GRIDS_LOGGER):
            loaded = v.policy_cls.from_pretrained(tmp_path, config=config)
        fresh = [r for r in caplog.records if "without GridS weights" in r.getMessage()]
        assert len(fresh) == 1 and "grids." in fresh[0].getMessage()
        if config is None:
            assert any("Converting upstream" in r.getMessage() for r in caplog.records)
        up = upstream.state_dict()
        for k, t in loaded.state_dict().items():
            if k.startswith("grids."):
                continue
            assert torch.equal(t, up[k]), k
        head = loaded.grids.sampler.mlp[2]  # explicit initialisation: anchors in the bias, zero weights
        assert torch.count_nonzero(head.weight) == 0
        anchors = loaded.grids.sampler.anchor_coords((16, 16)).clamp(1e-2, 1 - 1e-2)
        assert torch.allclose(torch.sigmoid(head.bias).view(-1, 2), anchors, atol=1e-4)


def check_mismatched_checkpoint(v: Variant, tmp_path: Path) -> None:
    """A GridS checkpoint with other GridS options is an error, never a silent re-initialisation."""
    v.policy(grids_k=8).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="checkpoint"):
        v.policy_cls.from_pretrained(tmp_path, config=v.config(grids_k=16))
    with pytest.raises(RuntimeError, match="GridS"):
        v.policy_cls.from_pretrained(tmp_path, config=v.config(grids_k=8, grids_predictor="attention"))
    with pytest.raises(RuntimeError, match="GridS"):
        v.policy_cls.from_pretrained(tmp_path, config=v.config(grids_k=8, grids_per_camera=True))


def check_broken_upstream_checkpoint(v: Variant, tmp_path: Path) -> None:
    """Upstream ``from_pretrained`` only prints loading errors; the GridS policies raise them (and a missing file)."""
    from safetensors.torch import load_file, save_file

    v.upstream().save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(weights)
    dropped = next(k for k in tensors if "action_out_proj" in k)
    save_file({k: t for k, t in tensors.items() if k != dropped}, weights)
    with pytest.raises(RuntimeError, match="missing keys"):
        v.policy_cls.from_pretrained(tmp_path / "ckpt", config=v.config())
    save_file({**tensors, "model.extra_head.weight": torch.zeros(2)}, weights)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        v.policy_cls.from_pretrained(tmp_path / "ckpt", config=v.config())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        v.policy_cls.from_pretrained(tmp_path / "empty", config=v.config())


def check_options(v: Variant) -> None:
    """One sampler per camera (LeRobot's dotted camera keys), points conditioned on the instruction, bfloat16."""
    for options in ({"grids_per_camera": True}, {"grids_conditioning": "language"}, {"dtype": "bfloat16"}):
        policy = v.policy(**options)
        length, _ = prefix_length(policy, make_batch())
        assert length == len(CAMERAS) * 16 + LANG_LEN
        loss, _ = policy.forward(make_batch())
        loss.backward()
        assert torch.isfinite(loss)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.grids.parameters())
