"""``grids_after_layer`` for ``pi0_grids`` / ``pi05_grids`` on lerobot 0.6.x: GridS inside PaliGemma's SigLIP tower.

The tiny PaliGemma of ``conftest`` gets 3 SigLIP layers here (224 px, patch 14: a 16 x 16 token map entering every
layer; the projector maps each token to the text width).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pi_checks
import pytest
import torch
from lerobot.policies.pi0.configuration_pi0 import PI0Config
from lerobot.policies.pi0.modeling_pi0 import PI0Policy
from lerobot.policies.pi05.configuration_pi05 import PI05Config
from lerobot.policies.pi05.modeling_pi05 import PI05Policy

import conftest
from conftest import CAMERAS, DENSE_TOKENS, LANG_LEN, make_batch
from lerobot_policy_grids.configuration_pi0_grids import PI0GridsConfig
from lerobot_policy_grids.configuration_pi05_grids import PI05GridsConfig
from lerobot_policy_grids.modeling_pi0_grids import PI0GridsPolicy
from lerobot_policy_grids.modeling_pi05_grids import PI05GridsPolicy

DEPTH = 3
VARIANTS = [
    pi_checks.Variant("pi0_grids", "pi0", PI0GridsConfig, PI0GridsPolicy, PI0Config, PI0Policy),
    pi_checks.Variant("pi05_grids", "pi05", PI05GridsConfig, PI05GridsPolicy, PI05Config, PI05Policy),
]
IDS = [v.type for v in VARIANTS]


@pytest.fixture(autouse=True)
def three_siglip_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(conftest.TINY_SIGLIP, "num_hidden_layers", DEPTH)


def tower(policy: Any) -> Any:
    return policy.model.paligemma_with_expert.paligemma.model.vision_tower.vision_model


def with_weights_of(v: pi_checks.Variant, source: Any) -> Any:
    """The upstream policy holding ``source``'s upstream weights (everything but ``grids.``), loaded strictly."""
    dense = v.upstream()
    dense.load_state_dict({k: t for k, t in source.state_dict().items() if not k.startswith("grids.")}, strict=True)
    return dense


def prefix(policy: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    images, img_masks = policy._preprocess_images(batch)
    return policy.model.embed_prefix(images, img_masks, batch["observation.language.tokens"],
                                     batch["observation.language.attention_mask"])[0]


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
@pytest.mark.parametrize(("after_layer", "options"), [(1, {"grids_conditioning": "language"}),
                                                      (DEPTH, {"grids_per_camera": True, "dtype": "bfloat16"})],
                         ids=["L1-language", "L3-per_camera-bfloat16"])
def test_forward_loss_backward_and_later_layers_see_k_tokens(
    v: pi_checks.Variant, after_layer: int, options: dict[str, Any]
) -> None:
    k = 16
    policy = v.policy(grids_k=k, grids_after_layer=after_layer, **options)
    assert len(tower(policy).encoder.layers) == DEPTH
    seen: list[int] = []
    for layer in tower(policy).encoder.layers:  # registered after GridS's own pre-hook, so they see its output
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    batch = make_batch()
    length, valid = pi_checks.prefix_length(policy, batch)
    assert length == valid == len(CAMERAS) * k + LANG_LEN
    assert seen == ([DENSE_TOKENS] * after_layer + [k] * (DEPTH - after_layer)) * len(CAMERAS)

    policy.train()
    loss, _ = policy.forward(batch)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in policy.grids.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    out = policy.grids_last_output()
    width = int(policy.model.paligemma_with_expert.paligemma.config.vision_config.hidden_size)
    assert list(out) == list(CAMERAS)
    assert out[CAMERAS[0]].tokens.shape == (2, k, width) and out[CAMERAS[0]].coords.shape == (2, k, 2)

    policy.eval()
    policy.reset()
    action = policy.select_action({key: t for key, t in batch.items() if key != "action"})
    assert action.shape == (2, conftest.ACTION_DIM) and torch.isfinite(action).all()


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
@pytest.mark.parametrize("after_layer", [0, DEPTH])
def test_every_patch_on_a_fixed_grid_reproduces_the_dense_prefix(v: pi_checks.Variant, after_layer: int) -> None:
    """K = 256 points at the patch centres read every patch exactly: the prefix equals upstream's, same weights."""
    policy = v.policy(grids_k=DENSE_TOKENS, grids_mode="fixed-grid", grids_after_layer=after_layer)
    dense = with_weights_of(v, policy)
    batch = make_batch()
    with torch.no_grad():
        ours, theirs = prefix(policy, batch), prefix(dense, batch)
        assert ours.shape == theirs.shape == (2, len(CAMERAS) * DENSE_TOKENS + LANG_LEN, ours.shape[-1])
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), (ours - theirs).abs().max()
        policy.grids.sampler.geometry.mlp[2].bias.copy_(torch.linspace(-1, 1, 32))  # the comparison can fail
        assert not torch.allclose(prefix(policy, batch), theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
def test_none_is_the_post_projector_path_bit_for_bit(v: pi_checks.Variant) -> None:
    explicit, default = v.policy(grids_after_layer=None), v.policy()
    for policy in (explicit, default):
        modules = [tower(policy), tower(policy).encoder, *tower(policy).encoder.layers]
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
    batch = make_batch()
    torch.manual_seed(4)
    loss_a, _ = explicit.forward(batch)
    torch.manual_seed(4)
    loss_b, _ = default.forward(batch)
    assert torch.equal(loss_a, loss_b)

    dense = with_weights_of(v, explicit)
    images, _ = explicit._preprocess_images(batch)
    with torch.no_grad():
        prefix(explicit, batch)
        for camera, image in zip(CAMERAS, images, strict=True):
            expected = explicit.grids.forward_camera(
                camera.removeprefix("observation.images."), dense.model.paligemma_with_expert.embed_image(image),
                (16, 16), layout="tokens",
            ).tokens
            assert torch.equal(explicit.grids_last_output()[camera].tokens, expected)


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
def test_upstream_checkpoint_loads_into_every_encoder_weight(
    v: pi_checks.Variant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = v.upstream(seed=3)
    upstream.save_pretrained(tmp_path / "up")
    with caplog.at_level(logging.WARNING, logger=pi_checks.GRIDS_LOGGER):
        loaded = v.policy_cls.from_pretrained(tmp_path / "up", config=v.config(grids_after_layer=1))
    assert any("without GridS weights" in r.getMessage() for r in caplog.records)
    up = upstream.state_dict()
    ours = loaded.state_dict()
    assert {k for k in ours if not k.startswith("grids.")} == set(up)  # no encoder weight added or renamed
    assert all(torch.equal(t, up[k]) for k, t in ours.items() if not k.startswith("grids."))

    loaded.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["grids_after_layer"] == 1
    again = v.policy_cls.from_pretrained(tmp_path / "ours")
    assert again.config.grids_after_layer == 1
    assert all(torch.equal(t, ours[k]) for k, t in again.state_dict().items())


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
def test_gradient_checkpointing_matches_plain_training(v: pi_checks.Variant) -> None:
    policy = v.policy(grids_after_layer=1, gradient_checkpointing=True)
    loss_ckpt, grads_ckpt = pi_checks._sampler_grads(policy, seed=5)
    policy.model.gradient_checkpointing_disable()
    loss_plain, grads_plain = pi_checks._sampler_grads(policy, seed=5)
    assert grads_ckpt and grads_ckpt.keys() == grads_plain.keys()
    assert any(g.abs().sum() > 0 for g in grads_ckpt.values())
    assert torch.allclose(loss_ckpt, loss_plain, rtol=1e-5, atol=1e-6)
    for k, g in grads_ckpt.items():
        assert torch.allclose(g, grads_plain[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grids_after_layer": DEPTH + 1}, rf"grids_after_layer must be None or an int in \[0, {DEPTH}\] for "
                                           rf"pi0?5?_grids \(its vision tower has {DEPTH} layers\), got {DEPTH + 1}"),
        ({"grids_after_layer": -2}, r"grids_after_layer must be None or an int in \[0, depth"),
        ({"grids_after_layer": 0, "grids_k": DENSE_TOKENS + 1},
         rf"grids_k must be in \[1, {DENSE_TOKENS}\] with grids_after_layer=0 .*16x16 token map entering vision "
         rf"layer 0; got grids_k={DENSE_TOKENS + 1}"),
    ],
    ids=["layer_above_depth", "negative_layer", "k_above_grid"],
)
def test_bad_after_layer_or_k_is_a_one_line_error(
    v: pi_checks.Variant, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        v.policy(**overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
@pytest.mark.parametrize("features", ["stem", "map"])
def test_stem_points_ignore_siglips_position_embeddings(v: pi_checks.Variant, features: str) -> None:
    """``grids_point_features="stem"`` inside PaliGemma's SigLIP: the points come from the patch embedding, so
    scrambling the position table leaves them in place; the paper's predictor (``map``) moves with it."""
    policy = v.policy(grids_after_layer=1, grids_point_features=features, grids_predictor="attention",
                      grids_points_lr_scale=30.0).eval()
    table = tower(policy).embeddings.position_embedding.weight
    coords = []
    with torch.no_grad():
        for q in policy.grids.parameters():  # a predictor that reads its input (its last layer starts at zero)
            q.add_(torch.randn(q.shape, generator=torch.Generator().manual_seed(q.numel())) * 0.3)
        batch = make_batch()
        for _ in range(2):
            prefix(policy, batch)
            coords.append({cam: out.coords for cam, out in policy.grids_last_output().items()})
            table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(5)) * 3)
    assert list(coords[0]) == list(CAMERAS)
    for cam in CAMERAS:
        assert torch.allclose(coords[0][cam], coords[1][cam]) == (features == "stem"), cam
    groups = policy.get_optim_params()  # the coordinate heads learn at 30x the policy's learning rate
    assert groups[-1]["lr"] == policy.config.optimizer_lr * 30
    assert [id(q) for q in groups[-1]["params"]] == [id(q) for q in policy.grids.coordinate_head_parameters()]
