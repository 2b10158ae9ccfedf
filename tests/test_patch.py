"""grids_vla.patch.transformers on tiny random SigLIP, CLIP and DINOv2 towers (no hub access).

transformers comes with the ``flops`` extra, which CI installs; it is imported directly (no skip).
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

import grids_vla.patch
from grids_vla.grids import GridSampler

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)
N = 16  # 32 px / 8 px patches -> 4 x 4 grid
# family -> (model class, config class, prefix tokens)
FAMILIES = {
    "siglip": (SiglipVisionModel, SiglipVisionConfig, 0),
    "clip": (CLIPVisionModel, CLIPVisionConfig, 1),
    "dinov2": (Dinov2Model, Dinov2Config, 1),
}


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    model_cls, config_cls, _ = FAMILIES[family]
    torch.manual_seed(seed)
    return model_cls(config_cls(**TINY)).eval()


def pixels(b: int = 2, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    encoder = getattr(model, "vision_model", model).encoder  # transformers 4.x nests SigLIP / CLIP towers
    return encoder.layers if hasattr(encoder, "layers") else encoder.layer


def no_grids_hooks(model: torch.nn.Module) -> bool:
    tables = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")
    return all(not getattr(m, t) for m in model.modules() for t in tables)


# ---- shapes and prefix handling --------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefix", ["drop", "keep"])
@pytest.mark.parametrize("after_layer", [None, 1])
def test_returns_k_tokens_per_image(family, prefix, after_layer):
    model = tiny(family)
    dense = model(pixels())
    grids_vla.patch.transformers(model, k=4, prefix=prefix, after_layer=after_layer)
    out = model(pixels())
    p = FAMILIES[family][2]
    assert out.last_hidden_state.shape == (2, 4 + (p if prefix == "keep" else 0), 32)
    if dense.pooler_output is not None:
        assert out.pooler_output.shape == dense.pooler_output.shape
    coords = grids_vla.patch.get_adapter(model).last_output.coords
    assert coords.shape == (2, 4, 2) and bool(((coords >= 0) & (coords <= 1)).all())


@pytest.mark.parametrize("family", ["clip", "dinov2"])
def test_kept_prefix_is_the_hosts_cls_token(family):
    ref = tiny(family)
    model = copy.deepcopy(ref)
    grids_vla.patch.transformers(model, k=4, prefix="keep")
    x = pixels()
    torch.testing.assert_close(model(x).last_hidden_state[:, :1], ref(x).last_hidden_state[:, :1], rtol=0, atol=0)


@pytest.mark.parametrize("family", ["clip", "dinov2"])
@pytest.mark.parametrize("prefix", ["drop", "keep"])
def test_cls_travels_through_the_encoder_after_layer(family, prefix):
    """GridS after the last layer does not touch the CLS token, so the host's CLS pooling is unchanged."""
    ref = tiny(family)
    model = copy.deepcopy(ref)
    grids_vla.patch.transformers(model, k=4, prefix=prefix, after_layer=TINY["num_hidden_layers"])
    x = pixels()
    torch.testing.assert_close(model(x).pooler_output, ref(x).pooler_output, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_all_patches_at_their_centres_give_back_the_hosts_tokens(family):
    """K = H W points start on the patch centres (geometry term zero at init): the output is the input grid.

    This pins the token order, the prefix split and the grid orientation together."""
    ref = tiny(family)
    model = copy.deepcopy(ref)
    grids_vla.patch.transformers(model, k=N, align_corners=False)
    x = pixels()
    p = FAMILIES[family][2]
    torch.testing.assert_close(model(x).last_hidden_state, ref(x).last_hidden_state[:, p:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_is_read_from_a_non_square_image(family):
    ref = tiny(family)
    model = copy.deepcopy(ref)
    grids_vla.patch.transformers(model, k=4)
    x = pixels(h=32, w=48)  # 4 x 6 patches
    kwargs = {} if family == "dinov2" else {"interpolate_pos_encoding": True}
    got = model(x, **kwargs).last_hidden_state
    host = ref(x, **kwargs).last_hidden_state
    sampler = grids_vla.patch.get_adapter(model).sampler
    with torch.no_grad():
        torch.testing.assert_close(got, sampler(host, (4, 6)).tokens)
        assert not torch.allclose(got, sampler(host, (6, 4)).tokens)


def test_registers_count_as_prefix_tokens():
    torch.manual_seed(0)
    model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=2, **TINY)).eval()
    ref = copy.deepcopy(model)
    grids_vla.patch.transformers(model, k=4, prefix="keep")
    x = pixels()
    out = model(x).last_hidden_state
    assert out.shape == (2, 3 + 4, 32)
    torch.testing.assert_close(out[:, :3], ref(x).last_hidden_state[:, :3], rtol=0, atol=0)


def test_tower_inside_a_composite_model_is_found():
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    model = CLIPModel(CLIPConfig(vision_config=TINY, text_config=text)).eval()
    grids_vla.patch.transformers(model, k=4)
    assert any(key.startswith("vision_model.grids.sampler.") for key in model.state_dict())
    assert model.vision_model(pixels()).last_hidden_state.shape == (2, 4, 32)


def test_returns_tuple_output_too():
    model = tiny("siglip")
    grids_vla.patch.transformers(model, k=4)
    assert model(pixels(), return_dict=False)[0].shape == (2, 4, 32)


# ---- after_layer: fewer tokens in the later layers, fewer FLOPs ------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("after_layer", [0, 1, 2])
def test_layers_after_L_run_on_k_tokens(family, after_layer):
    model = tiny(family)
    grids_vla.patch.transformers(model, k=4, prefix="keep", after_layer=after_layer)
    seen: list[int] = []
    layers = layer_list(model)
    handles = [layer.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1])) for layer in layers]
    model(pixels())
    for h in handles:
        h.remove()
    p = FAMILIES[family][2]
    # a forward hook sees the layer's (already resampled) input
    assert seen == [p + (4 if i >= after_layer else N) for i in range(len(layers))]


def total_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("family", FAMILIES)
def test_earlier_grids_costs_fewer_flops(family):
    x = pixels(b=1)
    dense = total_flops(tiny(family), x)
    flops = {}
    for after_layer in (0, 1, 2):
        model = tiny(family)
        grids_vla.patch.transformers(model, k=4, after_layer=after_layer)
        flops[after_layer] = total_flops(model, x)
    assert flops[0] < flops[1] < flops[2]
    assert flops[0] < dense


@pytest.mark.parametrize("after_layer", [None, 0])
def test_gradients_reach_grids_and_training_moves_the_points(after_layer):
    model = tiny("siglip")
    model.train()
    grids_vla.patch.transformers(model, k=4, after_layer=after_layer)
    sampler = grids_vla.patch.get_adapter(model).sampler
    x = pixels()
    target = torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(x)
    coords_before = grids_vla.patch.get_adapter(model).last_output.coords.detach()
    ((before.last_hidden_state - target) ** 2).mean().backward()
    assert sampler.mlp[2].weight.grad.abs().sum() > 0  # the coordinate head
    assert sampler.geometry.mlp[2].weight.grad.abs().sum() > 0
    if after_layer == 0:  # the host's layers behind GridS train through it too
        assert layer_list(model)[0].mlp.fc1.weight.grad.abs().sum() > 0
    opt.step()
    model(x)
    assert not torch.allclose(grids_vla.patch.get_adapter(model).last_output.coords, coords_before)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_keeps_grids_working(family):
    model = tiny(family)
    grids_vla.patch.transformers(model, k=4, after_layer=1)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    model.train()
    model(pixels()).last_hidden_state.square().mean().backward()
    assert grids_vla.patch.get_adapter(model).sampler.mlp[2].weight.grad.abs().sum() > 0
    assert layer_list(model)[1].mlp.fc1.weight.grad.abs().sum() > 0


# ---- save / load / unpatch ---------------------------------------------------------------------------


def perturbed_patched(family: str) -> torch.nn.Module:
    model = tiny(family)
    grids_vla.patch.transformers(model, k=4, after_layer=1)
    with torch.no_grad():  # make the GridS weights differ from a fresh init
        for param in grids_vla.patch.get_adapter(model).parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_round_trip_is_strict(family, tmp_path):
    model = perturbed_patched(family)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert any("grids.sampler." in key for key in state)
    fresh = tiny(family, seed=123)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict(state, strict=True)  # the unpatched host has no place for GridS
    grids_vla.patch.transformers(fresh, k=4, after_layer=1)
    fresh.load_state_dict(state, strict=True)
    x = pixels()
    torch.testing.assert_close(fresh(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_round_trip_is_strict(family, tmp_path):
    model = perturbed_patched(family)
    model.save_pretrained(tmp_path)
    loaded = FAMILIES[family][0].from_pretrained(tmp_path).eval()  # host weights; grids.* reported unexpected
    grids_vla.patch.transformers(loaded, k=4, after_layer=1)
    grids_vla.patch.load_grids(loaded, tmp_path)
    x = pixels()
    torch.testing.assert_close(loaded(x).last_hidden_state, model(x).last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(loaded(x).pooler_output, model(x).pooler_output, rtol=0, atol=0)

    plain = tiny(family)
    host_only = plain.state_dict()
    grids_vla.patch.transformers(plain, k=4)
    with pytest.raises(KeyError, match="saved from a model without GridS"):
        grids_vla.patch.load_grids(plain, host_only)
    with pytest.raises(ValueError, match="patch it before load_grids"):
        grids_vla.patch.load_grids(tiny(family), tmp_path)
    other = tiny(family)
    grids_vla.patch.transformers(other, k=8, after_layer=1)  # a different K: the shapes disagree
    with pytest.raises(RuntimeError, match="size mismatch"):
        grids_vla.patch.load_grids(other, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("after_layer", [None, 0, 2])
def test_unpatch_restores_the_host_exactly(family, after_layer):
    ref = tiny(family)
    model = copy.deepcopy(ref)
    grids_vla.patch.transformers(model, k=4, after_layer=after_layer)
    x = pixels()
    assert model(x).last_hidden_state.shape[1] == 4
    twin = copy.deepcopy(model)  # a copy is patched on its own sampler
    assert grids_vla.patch.unpatch(model) is model
    assert list(model.state_dict()) == list(ref.state_dict())
    assert no_grids_hooks(model)
    got, want = model(x, output_hidden_states=True), ref(x, output_hidden_states=True)
    for a, b in zip(got.to_tuple(), want.to_tuple(), strict=True):
        if isinstance(a, tuple):
            assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
        elif a is not None:
            assert torch.equal(a, b)
    assert twin(x).last_hidden_state.shape[1] == 4  # unpatching the original left the copy patched
    grids_vla.patch.unpatch(twin)
    assert torch.equal(twin(x).last_hidden_state, ref(x).last_hidden_state)


# ---- clear errors ------------------------------------------------------------------------------------------


def test_unsupported_models_are_rejected_by_name():
    with pytest.raises(TypeError, match="does not support ViTModel"):
        grids_vla.patch.transformers(ViTModel(ViTConfig(**TINY)), k=4)
    with pytest.raises(TypeError, match="does not support Linear"):
        grids_vla.patch.transformers(torch.nn.Linear(4, 4), k=4)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        grids_vla.patch.transformers("siglip", k=4)


def test_k_larger_than_the_grid_is_rejected():
    with pytest.raises(ValueError, match=r"k=17 exceeds the 16 patches of the 4x4 grid"):
        grids_vla.patch.transformers(tiny("clip"), k=17)
    model = tiny("clip")  # allowed on request
    grids_vla.patch.transformers(model, k=17, allow_oversample=True)
    assert model(pixels()).last_hidden_state.shape == (2, 17, 32)


def test_grid_that_cannot_be_inferred_is_an_error():
    model = tiny("clip")
    grids_vla.patch.transformers(model, k=4, after_layer=0)
    encoder = getattr(model, "vision_model", model).encoder
    hidden = torch.randn(2, 1 + 24, 32)  # the encoder called without pixel_values: 24 patches is not a square
    with pytest.raises(ValueError, match="cannot infer the patch grid.*24 is not a square"):
        encoder(inputs_embeds=hidden)
    assert encoder(inputs_embeds=torch.randn(2, 1 + 16, 32)).last_hidden_state.shape == (2, 5, 32)

    fixed = tiny("siglip")
    grids_vla.patch.transformers(fixed, k=4, grid_size=(4, 4))
    with pytest.raises(ValueError, match=r"grid_size=\(4, 4\).*32x48 px image gives a 4x6 patch grid"):
        fixed(pixels(h=32, w=48), interpolate_pos_encoding=True)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"after_layer must be None or an int in \[0, 2\].*got 3"):
        grids_vla.patch.transformers(tiny("siglip"), k=4, after_layer=3)
    with pytest.raises(ValueError, match="do not pass num_prefix_tokens="):
        grids_vla.patch.transformers(tiny("clip"), k=4, num_prefix_tokens=0)
    with pytest.raises(ValueError, match="prefix must be 'drop' or 'keep'"):
        grids_vla.patch.transformers(tiny("clip"), k=4, prefix="first")
    with pytest.raises(ValueError, match="k must be a positive int"):
        grids_vla.patch.transformers(tiny("clip"), k=0)
    model = tiny("dinov2")
    grids_vla.patch.transformers(model, k=4)
    with pytest.raises(ValueError, match="already patched"):
        grids_vla.patch.transformers(model, k=4)
    with pytest.raises(ValueError, match="not patched with GridS; nothing to unpatch"):
        grids_vla.patch.unpatch(tiny("dinov2"))


def stem_tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The tower's patch tokens before position embeddings, ``(B, H*W, C)``, computed by hand."""
    embeddings = getattr(model, "vision_model", model).embeddings
    if hasattr(embeddings, "patch_embedding"):  # SigLIP, CLIP: a Conv2d
        return embeddings.patch_embedding(x).flatten(2).transpose(1, 2)
    return embeddings.patch_embeddings(x)  # DINOv2: (B, H*W, C) already


def scramble_positions_(model: torch.nn.Module) -> None:
    embeddings = getattr(model, "vision_model", model).embeddings
    table = embeddings.position_embedding.weight if hasattr(embeddings, "position_embedding") \
        else embeddings.position_embeddings
    with torch.no_grad():
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(5)) * 3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("after_layer", [None, 0, 2])
@pytest.mark.parametrize("predictor", ["pooled", "attention"])
def test_stem_points_read_the_patch_embedding_before_positions(family, after_layer, predictor):
    """point_features="stem": the predictor reads the patch embedding's tokens, so its points are those predicted
    from them by hand, and position embeddings (which the sampled map carries) do not move them."""
    x = pixels()
    model = tiny(family)
    grids_vla.patch.transformers(model, k=4, after_layer=after_layer, point_features="stem", predictor=predictor)
    adapter = grids_vla.patch.get_adapter(model)
    sampler = adapter.sampler
    with torch.no_grad():
        for p in sampler.parameters():  # a predictor that reads its input (the zero-initialised last layer would not)
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        model(pixel_values=x)
        coords = adapter.last_output.coords
        expected, _ = sampler.predict_coords(stem_tokens(model, x), (4, 4))
        torch.testing.assert_close(coords, expected)
        scramble_positions_(model)
        model(pixel_values=x)
        torch.testing.assert_close(adapter.last_output.coords, coords)
        assert adapter._look is None  # nothing of the call is kept after it
    plain = tiny(family)  # the paper's predictor reads the map, which carries the positions
    grids_vla.patch.transformers(plain, k=4, after_layer=after_layer, predictor=predictor)
    sampler = grids_vla.patch.get_adapter(plain).sampler
    with torch.no_grad():
        for p in sampler.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        plain(pixel_values=x)
        before = grids_vla.patch.get_adapter(plain).last_output.coords
        scramble_positions_(plain)
        plain(pixel_values=x)
        assert not torch.allclose(grids_vla.patch.get_adapter(plain).last_output.coords, before)


def test_stem_point_features_errors_are_named():
    with pytest.raises(ValueError, match=r"point_features must be one of \('map', 'stem'\), got 'pixels'"):
        grids_vla.patch.transformers(tiny("siglip"), k=4, point_features="pixels")
    with pytest.raises(ValueError, match="point_features='stem' is what the point predictor reads; "
                                         "coords='fixed-grid' predicts none"):
        grids_vla.patch.transformers(tiny("siglip"), k=4, point_features="stem", coords="fixed-grid")
    with pytest.raises(ValueError, match="do not pass look_dim= .*pass point_features='stem'"):
        grids_vla.patch.transformers(tiny("clip"), k=4, look_dim=32)
    model = tiny("siglip")
    grids_vla.patch.transformers(model, k=4, after_layer=1, point_features="stem")
    with pytest.raises(ValueError, match="point_features='stem': the patch embedding did not run in this call"):
        model.encoder(inputs_embeds=torch.randn(2, N, 32))  # the embeddings are skipped
    grids_vla.patch.unpatch(model)
    assert no_grids_hooks(model)  # the patch embedding's hook is gone too


def test_token_mask_inside_the_encoder_is_an_error():
    model = tiny("clip")
    grids_vla.patch.transformers(model, k=4, after_layer=1)
    encoder = getattr(model, "vision_model", model).encoder
    mask = torch.zeros(2, 1, 1 + N, 1 + N)  # an additive attention mask over the 17 tokens
    with pytest.raises(ValueError, match=r"layer 1 got a \(2, 1, 17, 17\) mask.*cannot follow a token mask"):
        encoder(inputs_embeds=torch.randn(2, 1 + N, 32), attention_mask=mask)


def test_the_sampler_is_a_plain_grids_module():
    model = tiny("siglip")
    grids_vla.patch.transformers(model, k=4, hidden=64, geometry="fourier")
    sampler = grids_vla.patch.get_adapter(model).sampler
    assert isinstance(sampler, GridSampler) and sampler.mlp[0].out_features == 64
    assert sampler.geometry_mode == "fourier"
    assert any(name.endswith("grids.sampler") and module is sampler for name, module in model.named_modules())



def test_adapters_are_siblings_over_the_common_base():
    """Each adapter module imports only the core and ``_common``, never another adapter."""
    folder = Path(grids_vla.patch.__file__).parent
    adapters = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    assert {p.stem for p in adapters} >= {"hf_transformers", "timm"}
    for path in adapters:
        tree = ast.parse(path.read_text())
        siblings = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert siblings <= {"_common"}, f"{path.name} imports {sorted(siblings)} from grids_vla.patch"

# ---- the docs run as written ---------------------------------------------------------------------------


def test_integrations_doc_runs_as_written():
    text = (Path(__file__).parents[1] / "docs" / "integrations.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/integrations.md has no python block"
    namespace: dict = {}  # the blocks build on each other, like a reader running them in order
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/integrations.md[{i}]", "exec"), namespace)
