"""grids_vla.patch.timm on tiny random timm Vision Transformers (run inside .venv-timm: scripts/test_timm.sh).

Kept out of ``tests/``: timm needs torchvision, which only imports beside the CPU torch build through the LeRobot
plugin's schema shim, so it lives in its own environment. No model is downloaded (``pretrained=False``).
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
    import timm  # under CI a missing timm is an error, never a skip
else:
    timm = pytest.importorskip("timm", reason="timm is installed by scripts/test_timm.sh (.venv-timm)")
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import grids_vla.patch  # noqa: E402
from grids_vla.grids import GridSampler  # noqa: E402

DIM, DEPTH, CLASSES = 32, 2, 5
N = 16  # 32 px / 8 px patches -> 4 x 4 grid
# variant -> (VisionTransformer keyword arguments, prefix tokens)
VARIANTS = {
    "cls": (dict(class_token=True, global_pool="token"), 1),
    "registers": (dict(class_token=True, reg_tokens=2, no_embed_class=True, global_pool="token"), 3),
    "no_prefix": (dict(class_token=False, global_pool="avg"), 0),
}


def tiny(variant: str = "cls", seed: int = 0, **overrides) -> VisionTransformer:
    kwargs, _ = VARIANTS[variant]
    torch.manual_seed(seed)
    args = dict(img_size=32, patch_size=8, embed_dim=DIM, depth=DEPTH, num_heads=2, mlp_ratio=2.0)
    return VisionTransformer(num_classes=CLASSES, **args, **{**kwargs, **overrides}).eval()


def pixels(b: int = 2, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def no_hooks(model: torch.nn.Module) -> bool:
    tables = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return all(not getattr(m, t) for m in model.modules() for t in tables)


# ---- shapes and prefix handling --------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prefix", ["drop", "keep"])
@pytest.mark.parametrize("after_layer", [None, 1])
def test_forward_features_returns_k_tokens(variant, prefix, after_layer):
    model = tiny(variant)
    dense_logits = model(pixels())
    assert grids_vla.patch.timm(model, k=4, prefix=prefix, after_layer=after_layer) is model
    p = VARIANTS[variant][1]
    tokens = model.forward_features(pixels())
    assert tokens.shape == (2, 4 + (p if prefix == "keep" else 0), DIM)
    coords = grids_vla.patch.get_adapter(model).last_output.coords
    assert coords.shape == (2, 4, 2) and bool(((coords >= 0) & (coords <= 1)).all())
    logits = model(pixels())  # the head pools as built (prefix kept inside the call)
    assert logits.shape == dense_logits.shape == (2, CLASSES)
    assert torch.isfinite(logits).all()
    if prefix == "keep":  # timm's two-step pattern gives the same logits
        torch.testing.assert_close(model.forward_head(tokens), logits, rtol=0, atol=0)
    assert model.forward_features(pixels()).shape == tokens.shape  # model(x) left no state behind


def test_create_model_and_distillation_tokens():
    """timm.create_model builds the registry's architectures without the hub when pretrained=False."""
    small = dict(pretrained=False, img_size=32, patch_size=8, embed_dim=DIM, depth=DEPTH, num_heads=2)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=CLASSES, **small).eval()
    grids_vla.patch.timm(vit, k=4)
    assert vit.forward_features(pixels()).shape == (2, 4, DIM)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=CLASSES, **small).eval()
    assert deit.num_prefix_tokens == 2  # class + distillation token
    ref = copy.deepcopy(deit)
    grids_vla.patch.timm(deit, k=4, prefix="keep")
    x = pixels()
    out = deit.forward_features(x)
    assert out.shape == (2, 2 + 4, DIM)
    torch.testing.assert_close(out[:, :2], ref.forward_features(x)[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(deit(x), ref(x), rtol=0, atol=0)  # its head reads only the two prefix tokens


@pytest.mark.parametrize("variant", ["cls", "registers"])
def test_kept_prefix_is_the_hosts(variant):
    ref = tiny(variant)
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=4, prefix="keep")
    p = VARIANTS[variant][1]
    x = pixels()
    torch.testing.assert_close(model.forward_features(x)[:, :p], ref.forward_features(x)[:, :p], rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["cls", "registers"])
@pytest.mark.parametrize("after_layer", [None, DEPTH])
@pytest.mark.parametrize("prefix", ["drop", "keep"])
def test_class_token_pooling_is_unchanged_when_grids_runs_last(variant, after_layer, prefix):
    """GridS after the last block leaves the class token alone, so the logits of 'token' pooling do not move."""
    ref = tiny(variant)
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=4, prefix=prefix, after_layer=after_layer)
    x = pixels()
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-6)


def test_average_pooling_runs_over_the_grids_tokens():
    ref = tiny("no_prefix")
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=4)
    x = pixels()
    # at init the 4 points sit where 2 x 2 patches meet: their bilinear mean is the mean of all 16 tokens
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=1e-5)
    with torch.no_grad():  # move the points
        grids_vla.patch.get_adapter(model).sampler.mlp[2].bias.add_(0.5)
    tokens = model.forward_features(x)
    torch.testing.assert_close(model(x), model.head(model.fc_norm(tokens.mean(dim=1))), rtol=0, atol=1e-6)
    assert not torch.allclose(model(x), ref(x), atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_all_patches_at_their_centres_give_back_the_hosts_tokens(variant):
    """K = H W points start on the patch centres: the output is the input grid (token order, prefix split and
    grid orientation together)."""
    ref = tiny(variant)
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=N, align_corners=False)
    x = pixels()
    p = VARIANTS[variant][1]
    torch.testing.assert_close(model.forward_features(x), ref.forward_features(x)[:, p:], rtol=0, atol=1e-5)


def test_grid_is_read_from_a_non_square_image():
    ref = tiny("cls", dynamic_img_size=True)
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=4)
    x = pixels(h=32, w=48)  # 4 x 6 patches
    got = model.forward_features(x)
    host = ref.forward_features(x)
    sampler = grids_vla.patch.get_adapter(model).sampler
    with torch.no_grad():
        torch.testing.assert_close(got, sampler(host, (4, 6)).tokens[:, 1:])
        assert not torch.allclose(got, sampler(host, (6, 4)).tokens[:, 1:])


# ---- after_layer: fewer tokens in the later blocks, fewer FLOPs ---------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("after_layer", [0, 1, 2])
def test_blocks_after_L_run_on_k_tokens(variant, after_layer):
    model = tiny(variant)
    grids_vla.patch.timm(model, k=4, after_layer=after_layer)
    seen: list[int] = []
    handles = [b.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1])) for b in model.blocks]
    model(pixels())
    for h in handles:
        h.remove()
    p = VARIANTS[variant][1]
    assert seen == [p + (4 if i >= after_layer else N) for i in range(DEPTH)]


def total_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def test_earlier_grids_costs_fewer_flops():
    x = pixels(b=1)
    dense = total_flops(tiny(), x)
    flops = {}
    for after_layer in (0, 1, 2):
        model = tiny()
        grids_vla.patch.timm(model, k=4, after_layer=after_layer)
        flops[after_layer] = total_flops(model, x)
    assert flops[0] < flops[1] < flops[2] and flops[0] < dense


# ---- training -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("after_layer", [None, 1])
def test_gradients_reach_grids_and_training_moves_the_points(variant, after_layer):
    model = tiny(variant).train()
    grids_vla.patch.timm(model, k=4, after_layer=after_layer)
    adapter = grids_vla.patch.get_adapter(model)
    x = pixels()
    target = torch.randn(2, 4, DIM, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ((model.forward_features(x) - target) ** 2).mean().backward()
    coords_before = adapter.last_output.coords.detach()
    assert adapter.sampler.mlp[2].weight.grad.abs().sum() > 0  # the coordinate head
    assert adapter.sampler.geometry.mlp[2].weight.grad.abs().sum() > 0
    if after_layer is not None:  # the host's blocks behind GridS train through it too
        assert model.blocks[after_layer].mlp.fc1.weight.grad.abs().sum() > 0
    opt.step()
    model.forward_features(x)
    assert not torch.allclose(adapter.last_output.coords, coords_before)


def test_a_classification_loss_trains_the_sampler():
    model = tiny("no_prefix").train()  # average pooling: the logits depend on where the points look
    grids_vla.patch.timm(model, k=4, after_layer=1)
    torch.nn.functional.cross_entropy(model(pixels()), torch.tensor([0, 3])).backward()
    assert grids_vla.patch.get_adapter(model).sampler.mlp[2].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("after_layer", [None, 1])
def test_gradient_checkpointing_keeps_grids_working(after_layer):
    model = tiny("registers")
    grids_vla.patch.timm(model, k=4, after_layer=after_layer)
    model.set_grad_checkpointing(True)
    model.train()
    model.forward_features(pixels()).square().mean().backward()
    assert grids_vla.patch.get_adapter(model).sampler.mlp[2].weight.grad.abs().sum() > 0
    assert model.blocks[1].mlp.fc1.weight.grad.abs().sum() > 0


# ---- save / load / unpatch ---------------------------------------------------------------------------------


def perturbed_patched(variant: str, after_layer: int | None = 1) -> torch.nn.Module:
    model = tiny(variant)
    grids_vla.patch.timm(model, k=4, after_layer=after_layer)
    with torch.no_grad():  # make the GridS weights differ from a fresh init
        for param in grids_vla.patch.get_adapter(model).parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("after_layer", [None, 1])
def test_state_dict_round_trip_is_strict(variant, after_layer, tmp_path):
    model = perturbed_patched(variant, after_layer)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert any(key.startswith("grids.sampler.") for key in state)
    fresh = tiny(variant, seed=123)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict(state, strict=True)  # the unpatched host has no place for GridS
    grids_vla.patch.timm(fresh, k=4, after_layer=after_layer)
    fresh.load_state_dict(state, strict=True)
    x = pixels()
    torch.testing.assert_close(fresh.forward_features(x), model.forward_features(x), rtol=0, atol=0)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_grids_from_a_safetensors_file(variant, tmp_path):
    from safetensors.torch import save_file

    model = perturbed_patched(variant)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    loaded = tiny(variant)  # the host weights come back the host's way, GridS through load_grids
    host_state = {k: v for k, v in model.state_dict().items() if not k.startswith("grids.")}
    loaded.load_state_dict(host_state, strict=True)
    grids_vla.patch.timm(loaded, k=4, after_layer=1)
    grids_vla.patch.load_grids(loaded, tmp_path)  # a folder holding model.safetensors
    x = pixels()
    torch.testing.assert_close(loaded.forward_features(x), model.forward_features(x), rtol=0, atol=0)

    plain = tiny(variant)
    grids_vla.patch.timm(plain, k=4)
    with pytest.raises(KeyError, match="saved from a model without GridS"):
        grids_vla.patch.load_grids(plain, host_state)
    with pytest.raises(ValueError, match="patch it before load_grids"):
        grids_vla.patch.load_grids(tiny(variant), tmp_path / "model.safetensors")
    other = tiny(variant)
    grids_vla.patch.timm(other, k=8, after_layer=1)  # a different K: the shapes disagree
    with pytest.raises(RuntimeError, match="size mismatch"):
        grids_vla.patch.load_grids(other, tmp_path)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("after_layer", [None, 0, 1, DEPTH])
def test_unpatch_restores_the_host_exactly(variant, after_layer):
    ref = tiny(variant)
    model = copy.deepcopy(ref)
    grids_vla.patch.timm(model, k=4, after_layer=after_layer)
    x = pixels()
    assert model.forward_features(x).shape[1] == 4
    twin = copy.deepcopy(model)  # a copy is patched on its own sampler
    assert grids_vla.patch.unpatch(model) is model
    assert list(model.state_dict()) == list(ref.state_dict())
    assert no_hooks(model) and not hasattr(model, "grids")
    assert torch.equal(model.forward_features(x), ref.forward_features(x))
    assert torch.equal(model(x), ref(x))
    assert twin.forward_features(x).shape[1] == 4  # unpatching the original left the copy patched
    grids_vla.patch.unpatch(twin)
    assert torch.equal(twin(x), ref(x))
    grids_vla.patch.timm(model, k=4)  # and it can be patched again
    assert model.forward_features(x).shape[1] == 4


# ---- clear errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("after_layer", [None, 0, DEPTH])
@pytest.mark.parametrize("dynamic", [False, True])
def test_stem_points_read_the_patch_embedding_before_positions(variant, after_layer, dynamic):
    """point_features="stem": the predictor reads patch_embed's tokens, so its points are those predicted from them
    by hand, and scrambling the position embedding (which the sampled map carries) does not move them."""
    x = pixels()
    model = tiny(variant, dynamic_img_size=dynamic)
    grids_vla.patch.timm(model, k=4, after_layer=after_layer, point_features="stem", predictor="attention")
    adapter = grids_vla.patch.get_adapter(model)
    with torch.no_grad():
        for p in adapter.sampler.parameters():  # a predictor that reads its input
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        model.forward_features(x)
        coords = adapter.last_output.coords
        stem = model.patch_embed(x)
        expected, _ = adapter.sampler.predict_coords(stem.flatten(1, 2) if stem.dim() == 4 else stem, (4, 4))
        torch.testing.assert_close(coords, expected)
        model.pos_embed.add_(torch.randn(model.pos_embed.shape, generator=torch.Generator().manual_seed(5)) * 3)
        model(x)
        torch.testing.assert_close(adapter.last_output.coords, coords)
    with pytest.raises(ValueError, match="point_features='stem' is what the point predictor reads"):
        grids_vla.patch.timm(tiny(variant), k=4, point_features="stem", coords="random")


def test_non_vit_models_are_rejected_by_name():
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=CLASSES)
    with pytest.raises(TypeError, match="does not support ResNet: pass a timm VisionTransformer"):
        grids_vla.patch.timm(resnet, k=4)
    with pytest.raises(TypeError, match="does not support Linear"):
        grids_vla.patch.timm(torch.nn.Linear(4, 4), k=4)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        grids_vla.patch.timm("vit_tiny_patch16_224", k=4)


def test_k_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"k=17 exceeds the 16 patches of the 4x4 grid of this VisionTransformer"):
        grids_vla.patch.timm(tiny(), k=17)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive int"):
            grids_vla.patch.timm(tiny(), k=bad)
    model = tiny()  # allowed on request
    grids_vla.patch.timm(model, k=17, allow_oversample=True)
    assert model.forward_features(pixels()).shape == (2, 17, DIM)


def test_layer_out_of_range_is_rejected():
    for bad in (-1, DEPTH + 1, 1.0, True, "1"):
        with pytest.raises(ValueError, match=rf"after_layer must be None or an int in \[0, {DEPTH}\]"):
            grids_vla.patch.timm(tiny(), k=4, after_layer=bad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="do not pass num_prefix_tokens="):
        grids_vla.patch.timm(tiny(), k=4, num_prefix_tokens=0)
    with pytest.raises(ValueError, match="do not pass cond_dim=.*conditioning"):
        grids_vla.patch.timm(tiny(), k=4, cond_dim=8)
    with pytest.raises(ValueError, match="prefix must be 'drop' or 'keep'"):
        grids_vla.patch.timm(tiny(), k=4, prefix="first")
    model = tiny()
    grids_vla.patch.timm(model, k=4)
    with pytest.raises(ValueError, match="already patched"):
        grids_vla.patch.timm(model, k=4)
    with pytest.raises(ValueError, match="not patched with GridS; nothing to unpatch"):
        grids_vla.patch.unpatch(tiny())


def test_fixed_grid_and_token_dropout_errors():
    fixed = tiny("cls", dynamic_img_size=True)
    grids_vla.patch.timm(fixed, k=4, grid_size=(4, 4))
    with pytest.raises(ValueError, match=r"grid_size=\(4, 4\).*gives a 4x6 patch grid"):
        fixed.forward_features(pixels(h=32, w=48))
    dropping = tiny("cls", patch_drop_rate=0.5).train()
    grids_vla.patch.timm(dropping, k=4)
    with pytest.raises(ValueError, match="got 9 tokens; token dropout"):
        dropping.forward_features(pixels())
    assert dropping.eval().forward_features(pixels()).shape == (2, 4, DIM)  # PatchDropout is off in eval
    inner = tiny()
    grids_vla.patch.timm(inner, k=4, after_layer=1)
    mask = torch.zeros(2, 1, 1 + N, 1 + N)
    with pytest.raises(ValueError, match=r"layer 1 got a \(2, 1, 17, 17\) mask.*cannot follow a token mask"):
        inner.forward_features(pixels(), attn_mask=mask)


def test_the_sampler_is_a_plain_grids_module():
    model = tiny()
    grids_vla.patch.timm(model, k=4, hidden=64, geometry="fourier")
    sampler = grids_vla.patch.get_adapter(model).sampler
    assert isinstance(sampler, GridSampler) and sampler.mlp[0].out_features == 64
    assert sampler.geometry_mode == "fourier"
    assert dict(model.named_modules())["grids.sampler"] is sampler


def test_importing_the_adapters_does_not_import_timm():
    code = "import sys, grids_vla.patch; assert 'timm' not in sys.modules and 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    blocked = "import sys; sys.modules['timm'] = None; import grids_vla.patch; print(callable(grids_vla.patch.timm))"
    out = subprocess.run([sys.executable, "-c", blocked], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "True"


# ---- the docs run as written ---------------------------------------------------------------------------


def test_integrations_doc_timm_section_runs_as_written():
    """The timm blocks are fenced as ```py so that tests/test_patch.py (no timm there) leaves them to this test."""
    text = (Path(__file__).parents[1] / "docs" / "integrations.md").read_text()
    blocks = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/integrations.md has no py (timm) block"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/integrations.md[timm {i}]", "exec"), namespace)
