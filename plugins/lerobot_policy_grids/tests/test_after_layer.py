"""``grids_after_layer``: GridS inside SmolVLA's vision tower (tiny random SmolVLM with 3 vision layers), both
``grids_connector`` designs, and the rejection of both options where they do not apply.

The tiny tower: 64 px images, patch 4 -> a 16 x 16 token map entering every vision layer; connector scale factor 2,
so the dense image embedding has 8 x 8 = 64 tokens per camera and each GridS point takes a 2 x 2 neighbourhood
(``grids_connector="neighbourhood"``, the default) or one token, put through the connector as a uniform 2 x 2 block
(``"point"``).
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


# Placements and sampler options both forward tests run at: a middle layer with language-conditioned points, and
# the last layer with one sampler per camera.
LAYER_CASES = pytest.mark.parametrize(("after_layer", "options"), [(1, {"grids_conditioning": "language"}),
                                                                   (DEPTH, {"grids_per_camera": True})],
                                      ids=["L1-language", "L3-per_camera"])


@LAYER_CASES
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


@pytest.mark.parametrize("layer", [None, 2])
def test_act_grids_rejects_stem_features_in_one_step(layer: int | None) -> None:
    """ACT cannot have ``grids_point_features='stem'`` at all: the error says so whatever ``grids_after_layer`` is,
    rather than first asking for an after-layer that the next error then forbids."""
    from conftest import TINY_ACT
    from lerobot_policy_grids.configuration_act_grids import ACTGridsConfig

    inputs, outputs = features()
    with pytest.raises(ValueError, match="grids_point_features='stem' is not available for ACTGridsConfig: it needs "
                                         "grids_after_layer, and its ResNet backbone has no transformer") as info:
        ACTGridsConfig(input_features=inputs, output_features=outputs, grids_point_features="stem",
                       grids_after_layer=layer, **TINY_ACT)
    assert "\n" not in str(info.value)


# ---- grids_connector="point": one token per point inside the encoder --------------------------------------------


@LAYER_CASES
def test_point_connector_keeps_k_tokens_in_the_later_layers(
    vlm3: Path, after_layer: int, options: dict[str, Any]
) -> None:
    k = 100  # more than the 64 neighbourhoods the default design can place: one token per point fits 256
    p = policy(vlm3, grids_k=k, grids_after_layer=after_layer, grids_connector="point", **options)
    seen = tokens_per_layer(p)
    shapes: dict[str, tuple[int, ...]] = {}
    connector(p).register_forward_pre_hook(lambda m, args: shapes.update(input=tuple(args[0].shape)))
    connector(p).register_forward_hook(lambda m, args, out: shapes.update(output=tuple(out.shape)))
    batch = make_batch(language=True)
    assert prefix(p, batch).shape[1] == len(CAMERAS) * k + LANG + 1  # + the state token
    per_camera = [GRID * GRID] * after_layer + [k] * (DEPTH - after_layer)
    assert seen == per_camera * len(CAMERAS)
    # the connector's own projection gets an empty batch; what leaves it is K text-width tokens per image
    assert shapes["input"] == (0, SIDE * SIDE, 32) and shapes["output"] == (2, k, 64)

    p.train()
    seen.clear()
    loss, _ = p.forward(batch)
    assert torch.isfinite(loss) and seen == per_camera * len(CAMERAS)
    loss.backward()
    grads = [q.grad for q in p.grids.parameters() if q.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    out = p.grids_last_output()
    assert list(out) == list(CAMERAS)
    assert out[CAMERAS[0]].tokens.shape == (2, k, 32) and out[CAMERAS[0]].coords.shape == (2, k, 2)

    p.eval()
    with torch.no_grad():
        actions = p.predict_action_chunk({key: v for key, v in batch.items() if not key.startswith("action")})
    assert actions.shape == (2, 5, 7) and torch.isfinite(actions).all()


def test_point_connector_is_the_connector_on_a_uniform_block(vlm3: Path) -> None:
    """What leaves the connector equals ``token @ W_sum^T + b`` (``W_sum``: its weight summed over the 2 x 2 slots) and
    the unchanged connector applied to the token repeated 4 times; the gradient reaches the sampler through it."""
    from lerobot_policy_grids.encoder import uniform_block_projection

    k = 12
    p = policy(vlm3, grids_k=k, grids_after_layer=1, grids_connector="point")
    proj = connector(p).modality_projection.proj
    assert proj.weight.shape == (64, SIDE * SIDE * 32) and proj.bias is None
    proj.bias = torch.nn.Parameter(torch.linspace(-1, 1, 64))  # so the bias term is checked too
    seen: dict[str, torch.Tensor] = {}
    handles = [
        tower(p).post_layernorm.register_forward_hook(lambda m, args, out: seen.update(tokens=out)),
        connector(p).register_forward_hook(lambda m, args, out: seen.update(output=out)),
    ]
    prefix(p, make_batch(language=True))  # the hooks keep the second camera's tokens and connector output
    for handle in handles:
        handle.remove()
    tokens, output = seen["tokens"], seen["output"]
    assert tokens.shape == (2, k, 32) and output.shape == (2, k, 64)
    folded = proj.weight.reshape(64, SIDE * SIDE, 32).sum(dim=1)
    expected = tokens @ folded.T + proj.bias
    assert torch.allclose(output, expected, rtol=1e-5, atol=1e-5), (output - expected).abs().max()
    with torch.no_grad():  # the unchanged connector (not armed: GridS's hooks pass through) on 2 x 2 uniform blocks
        blocks = tokens.detach().reshape(2 * k, 1, 32).repeat(1, SIDE * SIDE, 1)
        direct = connector(p)(blocks).reshape(2, k, 64)
        assert torch.allclose(output, direct, rtol=1e-5, atol=1e-5), (output - direct).abs().max()
        assert torch.allclose(uniform_block_projection(connector(p), tokens), direct, rtol=1e-5, atol=1e-5)
        # the test can fail: one slot's weight instead of the sum over the four is far off
        one_slot = tokens @ proj.weight[:, :32].T + proj.bias
        assert not torch.allclose(output, one_slot, rtol=1e-3, atol=1e-3)
    output.sum().backward()
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in p.grids.parameters())


def test_point_connector_round_trip_and_the_other_design_refuses_it(
    vlm3: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from lerobot_policy_grids.common import POINT_CONNECTOR_KEY
    from lerobot_policy_grids.configuration_smolvla_grids import SmolVLAGridsConfig
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy

    p = policy(vlm3, grids_k=9, grids_after_layer=2, grids_connector="point")
    assert POINT_CONNECTOR_KEY in p.state_dict()
    assert POINT_CONNECTOR_KEY not in policy(vlm3, grids_k=9, grids_after_layer=2).state_dict()
    with torch.no_grad():
        for q in p.grids.parameters():
            q.add_(0.01 * torch.randn_like(q))
    p.save_pretrained(tmp_path / "point")
    assert json.loads((tmp_path / "point" / "config.json").read_text())["grids_connector"] == "point"
    loaded = SmolVLAGridsPolicy.from_pretrained(tmp_path / "point")
    assert loaded.config.grids_connector == "point" and loaded.config.grids_after_layer == 2
    a, b = p.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    batch = make_batch(language=True)
    with torch.no_grad():
        assert torch.equal(prefix(p, batch), prefix(loaded, batch))
    # same sampler shapes, other design: refused by name, both ways
    neighbourhood = SmolVLAGridsConfig(**kwargs(vlm3, grids_k=9, grids_after_layer=2))
    with pytest.raises(RuntimeError, match="saved with grids_connector='point'.*this policy has "
                                           "grids_connector='neighbourhood'") as info:
        SmolVLAGridsPolicy.from_pretrained(tmp_path / "point", config=neighbourhood)
    assert "\n" not in str(info.value)
    policy(vlm3, grids_k=9, grids_after_layer=2).save_pretrained(tmp_path / "neighbourhood")
    point = SmolVLAGridsConfig(**kwargs(vlm3, grids_k=9, grids_after_layer=2, grids_connector="point"))
    with pytest.raises(RuntimeError, match="saved with grids_connector='neighbourhood'.*this policy has "
                                           "grids_connector='point'"):
        SmolVLAGridsPolicy.from_pretrained(tmp_path / "neighbourhood", config=point)
    # an upstream SmolVLA checkpoint (no grids. key) fills every upstream weight; the sampler starts fresh, loudly
    fresh = policy(vlm3, seed=3, grids_k=9, grids_after_layer=2, grids_connector="point")
    with caplog.at_level(logging.WARNING, logger="lerobot_policy_grids"):
        fresh.load_state_dict(upstream_with_weights_of(vlm3, p).state_dict())
    assert any("without GridS weights" in r.getMessage() for r in caplog.records)
    assert torch.equal(fresh.state_dict()[POINT_CONNECTOR_KEY], torch.ones(1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grids_connector": "pixel", "grids_after_layer": 1},
         r"grids_connector must be one of \('neighbourhood', 'point'\), got 'pixel'"),
        ({"grids_connector": "point"}, r"grids_connector='point' needs grids_after_layer set .*got "
                                       r"grids_after_layer=None"),
        ({"grids_connector": "point", "grids_after_layer": 1, "grids_k": GRID * GRID + 1},
         rf"grids_k must be in \[1, {GRID * GRID}\] with grids_after_layer=1 .*16x16 token map entering vision "
         rf"layer 1 \(grids_connector='point': one token per point\); got grids_k={GRID * GRID + 1}"),
    ],
    ids=["unknown_design", "point_after_the_connector", "k_above_patches"],
)
def test_bad_connector_option_is_a_one_line_error(vlm3: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        policy(vlm3, **overrides)
    assert "\n" not in str(info.value)


def test_point_connector_is_refused_without_a_pixel_shuffle_connector() -> None:
    """``act_grids``, ``pi0_grids`` and ``pi05_grids`` (registered on both LeRobot releases) have no pixel-shuffle
    connector: only the default design is accepted, and the error names the option and where it applies."""
    import lerobot_policy_grids
    from conftest import TINY_ACT
    from lerobot_policy_grids.configuration_act_grids import ACTGridsConfig

    inputs, outputs = features()
    configs: dict[str, Any] = {"ACTGridsConfig": lambda **o: ACTGridsConfig(input_features=inputs,
                                                                            output_features=outputs, **TINY_ACT, **o)}
    assert {"pi0_grids", "pi05_grids"} <= set(lerobot_policy_grids.AVAILABLE_TYPES)
    from lerobot_policy_grids.configuration_pi0_grids import PI0GridsConfig
    from lerobot_policy_grids.configuration_pi05_grids import PI05GridsConfig

    configs["PI0GridsConfig"] = lambda **o: PI0GridsConfig(device="cpu", **o)
    configs["PI05GridsConfig"] = lambda **o: PI05GridsConfig(device="cpu", **o)
    for name, make in configs.items():
        assert make().grids_connector == "neighbourhood"
        layer = {} if name == "ACTGridsConfig" else {"grids_after_layer": 1}
        with pytest.raises(ValueError, match=rf"grids_connector must be 'neighbourhood' for {name}: it has no "
                                             r"pixel-shuffle connector \('point' is only for smolvla_grids with "
                                             r"grids_after_layer set\), got 'point'") as info:
            make(grids_connector="point", **layer)
        assert "\n" not in str(info.value)


# ---- grids_point_features="stem" and grids_points_lr_scale ------------------------------------------------------


def scramble_positions_(p: Any) -> None:
    table = tower(p).embeddings.position_embedding.weight
    with torch.no_grad():
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(5)) * 3)


@pytest.mark.parametrize("features", ["stem", "map"])
def test_stem_points_ignore_the_position_embeddings_the_map_carries(vlm3: Path, features: str) -> None:
    """With ``stem`` the points are predicted from the patch embedding, before SigLIP adds positions: scrambling the
    position table leaves them where they were; the paper's predictor (``map``) reads the positions and moves."""
    p = policy(vlm3, grids_after_layer=1, grids_point_features=features, grids_predictor="attention",
               grids_conditioning="language").eval()
    with torch.no_grad():
        for q in p.grids.parameters():  # a predictor that reads its input (its last layer starts at zero)
            q.add_(torch.randn(q.shape, generator=torch.Generator().manual_seed(q.numel())) * 0.3)
        batch = make_batch(language=True)
        prefix(p, batch)
        before = {cam: out.coords for cam, out in p.grids_last_output().items()}
        scramble_positions_(p)
        prefix(p, batch)
        after = {cam: out.coords for cam, out in p.grids_last_output().items()}
    assert list(before) == list(CAMERAS)
    for cam in CAMERAS:
        assert torch.allclose(before[cam], after[cam]) == (features == "stem"), cam
    assert (p.grids.sampler.look_dim == 32) == (features == "stem")  # the predictor reads the tower's width


def test_stem_policy_trains_and_round_trips(vlm3: Path, tmp_path: Path) -> None:
    from lerobot_policy_grids.modeling_smolvla_grids import SmolVLAGridsPolicy

    p = policy(vlm3, grids_after_layer=0, grids_point_features="stem", grids_predictor="attention")
    loss, _ = p.forward(make_batch(language=True))
    loss.backward()
    head = list(p.grids.coordinate_head_parameters())
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in head)
    p.save_pretrained(tmp_path / "stem")
    again = SmolVLAGridsPolicy.from_pretrained(tmp_path / "stem")
    assert again.config.grids_point_features == "stem"
    assert all(torch.equal(a, b) for a, b in zip(p.grids.state_dict().values(), again.grids.state_dict().values()))


def test_points_lr_scale_gives_the_coordinate_heads_their_own_group(vlm3: Path) -> None:
    plain = policy(vlm3)
    assert [id(q) for q in plain.get_optim_params()] == [id(q) for q in plain.parameters()]  # upstream's, untouched
    p = policy(vlm3, grids_points_lr_scale=30.0, grids_predictor="attention")
    groups = p.get_optim_params()
    head = [id(q) for q in p.grids.coordinate_head_parameters()]
    assert [id(q) for q in groups[-1]["params"]] == head and groups[-1]["lr"] == p.config.optimizer_lr * 30
    everything = [id(q) for g in groups for q in g["params"]]
    assert sorted(everything) == sorted(id(q) for q in p.parameters()) and len(set(everything)) == len(everything)
    optimizer = p.config.get_optimizer_preset().build(groups)  # what lerobot-train builds from them
    assert [g["lr"] for g in optimizer.param_groups] == [p.config.optimizer_lr, p.config.optimizer_lr * 30]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grids_point_features": "pixels"}, r"grids_point_features must be one of \('map', 'stem'\), got 'pixels'"),
        ({"grids_point_features": "stem"}, r"grids_point_features='stem' needs grids_mode='predicted' and "
                                           r"grids_after_layer set .*grids_after_layer=None"),
        ({"grids_point_features": "stem", "grids_after_layer": 1, "grids_mode": "fixed-grid"},
         r"grids_point_features='stem' needs grids_mode='predicted'.*got grids_mode='fixed-grid'"),
        ({"grids_points_lr_scale": 0}, r"grids_points_lr_scale must be a number > 0, got 0"),
        ({"grids_points_lr_scale": 10, "grids_mode": "random"}, r"grids_points_lr_scale=10 needs "
                                                                 r"grids_mode='predicted'"),
    ],
    ids=["unknown_features", "stem_after_the_tower", "stem_fixed_grid", "zero_lr_scale", "lr_scale_no_head"],
)
def test_bad_point_options_are_a_one_line_error(vlm3: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        policy(vlm3, **overrides)
    assert "\n" not in str(info.value)
