"""``grids_after_layer``: GridS inside SmolVLA's vision tower (tiny random SmolVLM with 3 vision layers), and its
rejection by ``act_grids``.

The tiny tower: 64 px images, patch 4 -> a 16 x 16 token map entering every vision layer; connector scale factor 2,
so the dense image embedding has 8 x 8 = 64 tokens per camera and each GridS point takes a 2 x 2 neighbourhood.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import CAMERAS, TINY_SMOLVLA, features, make_batch

DEPTH = 3
GRID = 16  # patch tokens per side entering each vision layer
SIDE = 2  # the connector's pixel-shuffle factor (tiny SmolVLM)
LANG = 8


@pytest.fixture(scope="module")
def vlm3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lerobot_policy_grids.offline import write_local_smolvlm

    return write_local_smolvlm(tmp_path_factory.mktemp("vlm3") / "tiny3", "tiny", vision_layers=DEPTH)


def kwargs(vlm: Path, **overrides: Any) -> dict[str, Any]:
    from lerobot_policy_grids.offline import smolvla_offline_kwargs

    inputs, outputs = features()
    return {"input_features": inputs, "output_features": outputs, **TINY_SMOLVLA, **smolvla_offline_kwargs(vlm),
            **overrides}


def policy(vlm: Path, seed: int = 0, **overrides: Any) -> Any:
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy

    torch.manual_seed(seed)
    return SmolVLAGridsPolicy(SmolVLAGridsConfig(**kwargs(vlm, **overrides)))


def upstream_with_weights_of(vlm: Path, source: Any) -> Any:
    """Plain SmolVLA holding ``source``'s upstream weights (everything but ``grids.``), loaded strictly."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    dense = SmolVLAPolicy(SmolVLAConfig(**kwargs(vlm)))
    dense.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("grids.")}, strict=True)
    return dense


def tower(p: Any) -> Any:
    return p.model.vlm_with_expert.get_vlm_model().vision_model


def connector(p: Any) -> Any:
    return p.model.vlm_with_expert.get_vlm_model().connector


def prefix(p: Any, batch: dict[str, Any]) -> torch.Tensor:
    images, img_masks = p.prepare_images(batch)
    return p.model.embed_prefix(images, img_masks, batch["observation.language.tokens"],
                                batch["observation.language.attention_mask"], state=p.prepare_state(batch))[0]


def tokens_per_layer(p: Any) -> list[int]:
    """Install hooks recording how many tokens each vision layer receives (called after GridS's own hooks)."""
    seen: list[int] = []
    for layer in tower(p).encoder.layers:
        layer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    return seen


@pytest.mark.parametrize(("after_layer", "options"), [(1, {"grids_conditioning": "language"}),
                                                      (DEPTH, {"grids_per_camera": True})],
                         ids=["L1-language", "L3-per_camera"])
def test_forward_loss_backward_and_later_layers_see_the_neighbourhoods(
    vlm3: Path, after_layer: int, options: dict[str, Any]
) -> None:
    k = 16
    p = policy(vlm3, grids_k=k, grids_after_layer=after_layer, **options)
    seen = tokens_per_layer(p)
    shapes: dict[str, tuple[int, ...]] = {}
    connector(p).register_forward_pre_hook(lambda m, args: shapes.update(input=tuple(args[0].shape)))
    connector(p).register_forward_hook(lambda m, args, out: shapes.update(output=tuple(out.shape)))
    batch = make_batch(language=True)
    assert prefix(p, batch).shape[1] == len(CAMERAS) * k + LANG + 1  # + the state token
    # layers before L see the 16 x 16 map, layers from L on K points x 2 x 2 neighbours (two cameras)
    per_camera = [GRID * GRID] * after_layer + [k * SIDE * SIDE] * (DEPTH - after_layer)
    assert seen == per_camera * len(CAMERAS)
    # the connector shuffles each point's 2 x 2 neighbourhood as one tiny image: B*K images of 4 tokens -> 1 each,
    # handed on as (B, K, text width)
    assert shapes["input"] == (2 * k, SIDE * SIDE, 32) and shapes["output"] == (2, k, 64)

    p.train()
    seen.clear()
    loss, _ = p.forward(batch)
    assert torch.isfinite(loss) and len(seen) == DEPTH * len(CAMERAS)
    loss.backward()
    grads = [q.grad for q in p.grids.parameters() if q.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    out = p.grids_last_output()
    assert list(out) == list(CAMERAS)
    assert out[CAMERAS[0]].tokens.shape == (2, k * SIDE * SIDE, 32) and out[CAMERAS[0]].coords.shape == (2, k, 2)

    p.eval()
    with torch.no_grad():
        actions = p.predict_action_chunk({key: v for key, v in batch.items() if not key.startswith("action")})
    assert actions.shape == (2, 5, 7) and torch.isfinite(actions).all()


@pytest.mark.parametrize("after_layer", [0, DEPTH])
def test_all_blocks_on_a_fixed_grid_reproduce_dense_smolvla(vlm3: Path, after_layer: int) -> None:
    """K = the 8 x 8 connector blocks at their centres: each neighbourhood reads one dense 2 x 2 block exactly, so the
    whole prefix equals plain SmolVLA's with the same weights (the order inside the encoder is immaterial)."""
    p = policy(vlm3, grids_k=64, grids_mode="fixed-grid", grids_after_layer=after_layer)
    dense = upstream_with_weights_of(vlm3, p)
    batch = make_batch(language=True)
    with torch.no_grad():
        ours, theirs = prefix(p, batch), prefix(dense, batch)
    assert ours.shape == theirs.shape == (2, len(CAMERAS) * 64 + LANG + 1, 64)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), (ours - theirs).abs().max()
    # a non-zero geometry embedding (not a uniform shift, which the tower's layer norms remove) makes it differ
    with torch.no_grad():
        p.grids.sampler.geometry.mlp[2].bias.copy_(torch.linspace(-1, 1, 32))
        assert not torch.allclose(prefix(p, batch), theirs, rtol=1e-4, atol=1e-5)


def test_pretrained_weights_unchanged_and_upstream_checkpoint_loads(
    vlm3: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No encoder or connector weight is added or renamed; an upstream SmolVLA state dict fills all of them, and a
    training step leaves the (frozen) vision tower and connector as loaded."""
    p = policy(vlm3, seed=1, grids_k=16, grids_after_layer=1)
    up = upstream_with_weights_of(vlm3, policy(vlm3, seed=7))  # other random weights than p's
    up_state = up.state_dict()
    assert {k for k in p.state_dict() if not k.startswith("grids.")} == set(up_state)
    with caplog.at_level(logging.WARNING, logger="lerobot_policy_grids"):
        p.load_state_dict(up_state)
    assert any("without GridS weights" in r.getMessage() for r in caplog.records)
    frozen = {f"tower.{k}": v.clone() for k, v in tower(p).state_dict().items()}
    frozen.update({f"connector.{k}": v.clone() for k, v in connector(p).state_dict().items()})
    for key, value in frozen.items():
        part, name = key.split(".", 1)
        source = "model.vlm_with_expert.vlm.model." + ("vision_model." if part == "tower" else "connector.") + name
        assert torch.equal(value, up_state[source]), key

    p.train()
    sampler_before = {k: v.clone() for k, v in p.grids.state_dict().items()}
    opt = torch.optim.AdamW(p.get_optim_params(), lr=1e-2)
    loss, _ = p.forward(make_batch(language=True))
    loss.backward()
    opt.step()
    after = {f"tower.{k}": v for k, v in tower(p).state_dict().items()}
    after.update({f"connector.{k}": v for k, v in connector(p).state_dict().items()})
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(p.grids.state_dict()[k], v) for k, v in sampler_before.items())


def test_none_is_the_post_connector_path_bit_for_bit(vlm3: Path) -> None:
    """``grids_after_layer=None`` installs nothing in the tower, and the image tokens are exactly GridS applied to
    plain SmolVLA's ``embed_image`` output (the placement before this option existed)."""
    explicit = policy(vlm3, grids_k=16, grids_after_layer=None)
    default = policy(vlm3, grids_k=16)
    for p in (explicit, default):
        modules = [tower(p), tower(p).encoder, *tower(p).encoder.layers, connector(p)]
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
        assert "_grids_encoder" not in p.__dict__
    batch = make_batch(language=True)
    torch.manual_seed(3)
    loss_a, _ = explicit.forward(batch)
    torch.manual_seed(3)
    loss_b, _ = default.forward(batch)
    assert torch.equal(loss_a, loss_b)

    dense = upstream_with_weights_of(vlm3, explicit)
    images, _ = explicit.prepare_images(batch)
    with torch.no_grad():
        prefix(explicit, batch)
        for camera, image in zip(CAMERAS, images, strict=True):
            expected = explicit.grids.forward_camera(
                camera.removeprefix("observation.images."), dense.model.vlm_with_expert.embed_image(image), (8, 8),
                layout="tokens",
            ).tokens
            assert torch.equal(explicit.grids_last_output()[camera].tokens, expected)


def test_round_trip_keeps_the_placement(vlm3: Path, tmp_path: Path) -> None:
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy

    p = policy(vlm3, grids_k=9, grids_after_layer=2)
    with torch.no_grad():
        for q in p.grids.parameters():
            q.add_(0.01 * torch.randn_like(q))
    p.save_pretrained(tmp_path)
    loaded = SmolVLAGridsPolicy.from_pretrained(tmp_path)
    assert loaded.config.grids_after_layer == 2 and loaded.config.grids_k == 9
    a, b = p.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = make_batch(language=True)
    with torch.no_grad():
        assert torch.equal(prefix(p, batch), prefix(loaded, batch))
    # the other placement's sampler works at the text width: the checkpoint does not fit it, and the error says so
    with pytest.raises(RuntimeError, match="checkpoint does not fit .*grids_after_layer"):
        SmolVLAGridsPolicy.from_pretrained(tmp_path, config=SmolVLAGridsConfig(**kwargs(vlm3, grids_k=9)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grids_after_layer": DEPTH + 1}, rf"grids_after_layer must be None or an int in \[0, {DEPTH}\] for "
                                           rf"smolvla_grids .*got {DEPTH + 1}"),
        ({"grids_after_layer": -1}, r"grids_after_layer must be None or an int in \[0, depth"),
        ({"grids_after_layer": True}, r"grids_after_layer must be None or an int"),
        ({"grids_after_layer": 1, "grids_k": 65}, r"grids_k must be in \[1, 64\] with grids_after_layer=1 .*"
                                                  r"2x2 neighbourhoods of the 16x16 token map.*got grids_k=65"),
    ],
    ids=["layer_above_depth", "negative_layer", "bool_layer", "k_above_blocks"],
)
def test_bad_after_layer_or_k_is_a_one_line_error(vlm3: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        policy(vlm3, **overrides)
    assert "\n" not in str(info.value)


def test_oversampling_past_the_grid_needs_the_flag(vlm3: Path) -> None:
    p = policy(vlm3, grids_k=65, grids_after_layer=1, grids_allow_oversample=True)
    assert prefix(p, make_batch(language=True)).shape[1] == len(CAMERAS) * 65 + LANG + 1


def test_act_grids_rejects_after_layer() -> None:
    from conftest import TINY_ACT
    from lerobot_policy_grids.configuration_act_grids import ACTGridsConfig

    inputs, outputs = features()
    with pytest.raises(ValueError, match="grids_after_layer must be None for ACTGridsConfig: its ResNet backbone has "
                                         "no transformer layers") as info:
        ACTGridsConfig(input_features=inputs, output_features=outputs, grids_after_layer=2, **TINY_ACT)
    assert "\n" not in str(info.value) and "got 2" in str(info.value)
    assert ACTGridsConfig(input_features=inputs, output_features=outputs, **TINY_ACT).grids_after_layer is None
