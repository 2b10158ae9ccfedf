"""The compact policy's reducer placement: after the encoder (default) or at the input of ViT block L."""

import pytest
import torch

from grids_vla.policy import GridSVLAConfig, GridSVLAPolicy

CAMS = ("agentview", "eye_in_hand")


def tiny(**kw):
    return GridSVLAConfig(image_size=32, patch_size=8, vision_dim=32, dim=48, vision_heads=2, heads=2, depth=1,
                          vision_depth=2, k=4, instructions=("go",), **kw)


def batch(b=2):
    g = torch.Generator().manual_seed(0)
    imgs = {c: torch.randint(0, 256, (b, 3, 32, 32), generator=g, dtype=torch.uint8) for c in CAMS}
    return imgs, torch.randn(b, 8, generator=g), ["go"] * b


@pytest.mark.parametrize("reducer", ["grids", "tokenlearner", "perceiver"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_blocks_after_layer_see_k_tokens(reducer, layer):
    policy = GridSVLAPolicy(tiny(reducer=reducer, after_layer=layer))
    seen = []
    for blk in policy.vision.blocks:
        blk.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    imgs, state, text = batch()
    out = policy(imgs, state, text, target=torch.zeros(2, 8, 7))
    assert seen == [16] * layer + [4] * (2 - layer)  # a 4x4 grid before L, K=4 tokens per camera from L on
    assert out.actions.shape == (2, 8, 7)
    out.loss.backward()
    assert policy.vision.patch.weight.grad.abs().sum() > 0  # the encoder still learns through the reducer
    if reducer == "grids":
        assert out.coords.shape == (2, 2, 4, 2)


def test_reducer_width_follows_placement():
    # in the encoder the reducer reads vision_dim-wide tokens; after it, the projected dim-wide ones
    assert GridSVLAPolicy(tiny(after_layer=0)).reducer.sampler.geometry.mlp[2].out_features == 32
    assert GridSVLAPolicy(tiny()).reducer.sampler.geometry.mlp[2].out_features == 48


@pytest.mark.parametrize("bad, match", [
    (dict(after_layer=3), r"after_layer must be None .* \[0, vision_depth=2\], got 3"),
    (dict(after_layer=-1), r"got -1"),
    (dict(after_layer=True), r"got True"),
    (dict(after_layer=0, reducer="dense"), "dense"),
])
def test_bad_placement_is_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny(**bad)


def test_placement_is_strict_in_checkpoints(tmp_path):
    GridSVLAPolicy(tiny(after_layer=1)).save_pretrained(tmp_path)
    assert GridSVLAPolicy.from_pretrained(tmp_path).config.after_layer == 1
    with pytest.raises(ValueError, match="after_layer: checkpoint 1 vs expected 0"):
        GridSVLAPolicy.from_pretrained(tmp_path, expected_config=tiny(after_layer=0))


def test_presets_name_the_placement():
    assert GridSVLAConfig.preset("grids-16-l0").after_layer == 0
    assert GridSVLAConfig.preset("grids-16").after_layer is None
