"""FLOP counter and latency benchmark on the real VLA architectures (grids_vla.flops)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from grids_vla.cli import main  # noqa: E402
from grids_vla.flops import (  # noqa: E402
    DecoderSpec,
    ViTSpec,
    VLAConfig,
    VLAModules,
    count_flops,
    flops_table,
    get_config,
    model_flops,
)
from grids_vla.flops.arch import decoder_layer  # noqa: E402
from grids_vla.grids import GridSampler  # noqa: E402

GF = 1e9


# ---- the counter on small modules, against hand-computed FLOPs -------------------------------


def test_counter_linear_and_conv_by_hand():
    lin = nn.Linear(5, 7)
    assert count_flops(lin, torch.randn(3, 5)) == 2 * 3 * 5 * 7
    conv = nn.Conv2d(3, 8, kernel_size=4, stride=4)
    # 2 x (output pixels) x (out channels) x (in channels x kernel area)
    assert count_flops(conv, torch.randn(2, 3, 16, 16)) == 2 * (2 * 4 * 4) * 8 * (3 * 4 * 4)


def _tiny_decoder(kind: str = "llama") -> DecoderSpec:
    return DecoderSpec(kind, hidden=64, intermediate=96, layers=3, heads=4, kv_heads=2, head_dim=16)


@pytest.mark.parametrize("kind", ["llama", "gemma"])
def test_decoder_layer_by_hand(kind):
    spec = _tiny_decoder(kind)
    layer = spec.build(1).layers[0]
    n, p = 5, 7
    d, q_dim, kv_dim, mlp = spec.hidden, spec.heads * spec.head_dim, spec.kv_dim, spec.intermediate
    proj = 2 * n * d * (q_dim + 2 * kv_dim) + 2 * n * q_dim * d
    ffn = 2 * n * 3 * d * mlp
    h = torch.randn(1, n, d)
    # self attention over its own n tokens: scores and weighted sum, 2 x heads x n x n x head_dim each
    got = count_flops(lambda: decoder_layer(layer, h, heads=spec.heads, kv_heads=spec.kv_heads))
    assert got == proj + ffn + 2 * 2 * spec.heads * n * n * spec.head_dim
    # with a cached prefix of p tokens the keys are p + n long
    past = (torch.randn(1, spec.kv_heads, p, spec.head_dim), torch.randn(1, spec.kv_heads, p, spec.head_dim))
    got = count_flops(lambda: decoder_layer(layer, h, heads=spec.heads, kv_heads=spec.kv_heads, past=past))
    assert got == proj + ffn + 2 * 2 * spec.heads * n * (p + n) * spec.head_dim


def test_meta_counts_equal_real_counts():
    spec = _tiny_decoder()
    layer_real = spec.build(1).layers[0]
    with torch.device("meta"):
        layer_meta = spec.build(1).layers[0]
    real = count_flops(lambda: decoder_layer(layer_real, torch.randn(1, 9, 64), heads=4, kv_heads=2))
    meta = count_flops(
        lambda: decoder_layer(layer_meta, torch.empty(1, 9, 64, device="meta"), heads=4, kv_heads=2)
    )
    assert real == meta > 0


# ---- one layer x depth == the whole model, on tiny configs run for real -----------------------

_TINY_VIT = ViTSpec("siglip", 32, 48, 3, 2, 8, 32)
_TINY_DINO = ViTSpec("dinov2-reg", 24, 40, 2, 2, 8, 32, registers=2)


def _tiny(head: str) -> VLAConfig:
    common = dict(encoders=(_TINY_VIT,), projector="linear", llm=_tiny_decoder("gemma"), default_cameras=2,
                  default_prompt_tokens=5)  # fmt: skip
    if head == "flow":
        return VLAConfig(name="tiny-flow", title="tiny", head="flow", expert=_tiny_decoder("llama"),
                         time_cond="concat", state_in_suffix=True, action_horizon=4, action_dim=6, denoise_steps=3,
                         **common)  # fmt: skip
    if head == "flow-cross":  # SmolVLA-like: pixel shuffle, alternating cross-attention, adaRMS
        common["projector"], common["pixel_shuffle"] = "pixel-shuffle", 2
        return VLAConfig(name="tiny-cross", title="tiny", head="flow", expert=dataclasses.replace(
            _tiny_decoder("llama"), hidden=48), expert_cross_every=2, time_cond="adarms", state_in_prefix=True,
            action_horizon=4, action_dim=6, denoise_steps=2, **common)  # fmt: skip
    common["encoders"], common["projector"] = (_TINY_VIT, _TINY_DINO), "fused-mlp"
    if head == "autoregressive":
        return VLAConfig(name="tiny-ar", title="tiny", head="autoregressive", action_dim=4, vocab=50, **common)
    return VLAConfig(name="tiny-par", title="tiny", head="parallel", state_in_prefix=True, state_dim=5,
                     action_dim=3, action_horizon=2, **common)  # fmt: skip


@pytest.mark.parametrize("head", ["flow", "flow-cross", "autoregressive", "parallel"])
@pytest.mark.parametrize("k", [None, 3])
def test_full_count_matches_running_the_whole_model(head, k):
    cfg = _tiny(head)
    torch.manual_seed(0)
    m = VLAModules(cfg, device="cpu")  # every layer, real tensors
    sampler = GridSampler(cfg.width, k, grid_size=cfg.grid) if k else None

    def call():
        tokens = m.project(m.vision(m.pixels(2)))
        if sampler is not None:
            tokens = sampler(tokens)[0]
        h, cache = m.run_llm(m.prefix_inputs(tokens, 5))
        m.actions(h, cache)

    with torch.no_grad():
        real = count_flops(call)
    counted = model_flops(cfg, k, cameras=2, prompt_tokens=5)
    assert counted.total == real
    assert counted.components["grids"] > 0 if k else counted.components["grids"] == 0


# ---- the paper's numbers and the true full-depth numbers ---------------------------------------


@pytest.mark.parametrize(
    "model,k,target",
    [("pi0", None, 216.01), ("pi0", 16, 51.65), ("pi0", 4, 43.61),
     ("pi05", None, 249.76), ("pi05", 16, 83.84), ("pi05", 4, 75.73)],
)  # fmt: skip
def test_paper_accounting_reproduces_paper(model, k, target):
    got = model_flops(model, k, accounting="paper").total / GF  # defaults: 3 camera slots, prompt 48 / 200
    assert got == pytest.approx(target, rel=0.02)


def test_full_pi0_matches_measured_full_depth():
    dense = model_flops("pi0", None, cameras=2, prompt_tokens=32)
    assert dense.total / GF == pytest.approx(3005.8, rel=0.02)
    per_image = (dense.components["vision"] + dense.components["projector"]) / 2 / GF
    assert per_image == pytest.approx(220.18, rel=0.02)
    assert dense.components["llm_prefix"] / GF == pytest.approx(2199.85, rel=0.02)
    assert model_flops("pi0", 16, cameras=2, prompt_tokens=32).total / GF == pytest.approx(1024.1, rel=0.02)
    assert model_flops("pi0", 4, cameras=2, prompt_tokens=32).total / GF == pytest.approx(926.8, rel=0.02)
    # and the paper's counting convention gives a bigger reduction than the real one
    paper = flops_table("pi0", [16], accounting="paper")
    full = flops_table("pi0", [16])
    assert paper[1]["reduction"] > full[1]["reduction"] + 0.05


@pytest.mark.parametrize("model", ["pi0", "pi05", "smolvla", "openvla", "openvla-oft"])
def test_table_limit_and_fractions(model):
    rows = flops_table(model, [16, 4, 1])
    labels = [r["label"] for r in rows]
    assert labels[0] == "dense" and labels[-1] == "limit"
    totals = [r["total"] for r in rows]
    assert totals == sorted(totals, reverse=True)  # fewer tokens, fewer FLOPs, limit lowest
    assert rows[-1]["fraction_of_limit"] == pytest.approx(1.0)
    fracs = [r["fraction_of_limit"] for r in rows[1:]]
    assert all(0 < f <= 1 for f in fracs) and fracs == sorted(fracs)
    # the encoder cost does not depend on K
    assert len({r["components"]["vision"] for r in rows}) == 1


def test_dense_k_equals_dense_row():
    cfg = get_config("smolvla")
    assert cfg.tokens_per_camera == 64
    assert model_flops("smolvla", 64).total == model_flops("smolvla", None).total
    assert [r["label"] for r in flops_table("smolvla", [64, 4])] == ["dense", "4", "limit"]


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        model_flops("pi7")
    with pytest.raises(ValueError, match="k must be"):
        flops_table("pi0", [0])
    with pytest.raises(ValueError, match="exceeds"):
        model_flops("pi0", 257)
    with pytest.raises(ValueError, match="cameras"):
        model_flops("pi0", 16, cameras=0)
    with pytest.raises(ValueError, match="accounting"):
        model_flops("pi0", 16, accounting="xla")
    assert get_config("PI0.5").name == "pi05"


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_flops_json_and_table(capsys):
    assert main(["flops", "--model", "pi0", "--k", "256", "16", "--cameras", "2", "--prompt-tokens", "32",
                 "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in rows] == ["dense", "16", "limit"]
    assert rows[0]["total"] / GF == pytest.approx(3005.8, rel=0.02)
    assert not {"after_layer", "bound", "fraction_of_bound", "notes"} & set(rows[1])  # unchanged without --after-layer
    assert main(["flops", "--model", "pi05", "--accounting", "paper"]) == 0
    out = capsys.readouterr().out
    assert "accounting=paper" in out and "limit" in out
    assert main(["flops", "--model", "nope"]) == 2
    assert main(["flops", "--k", "0"]) == 2


def test_bench_latency_smoke(tmp_path, capsys):
    out = tmp_path / "lat.json"
    code = main(["bench-latency", "--model", "smolvla", "--k", "4", "--cameras", "1", "--prompt-tokens", "8",
                 "--vision-layers", "1", "--llm-layers", "1", "--steps", "1", "--repeats", "2", "--warmup", "0",
                 "--threads", "1", "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert [r["label"] for r in result["rows"]] == ["dense", "4"]
    assert result["info"]["threads"] == 1 and result["info"]["llm_layers"] == 1
    assert all(len(r["all_total_ms"]) == 2 and r["total_ms"] > 0 for r in result["rows"])
    assert result["rows"][1]["grids_over_vision"] > 0
    assert "speedup" in capsys.readouterr().out
    assert main(["bench-latency", "--model", "pi0", "--k", "300"]) == 2


# ---- GridS inside the vision encoder (--after-layer) ----------------------------------------------


def _run_split_model(cfg: VLAConfig, k: int, layer: int) -> int:
    """FLOPs of the whole tiny model run on real tensors, each encoder patched at min(layer, its depth)."""
    from grids_vla import patch

    torch.manual_seed(0)
    m = VLAModules(cfg, device="cpu")
    for spec, enc in zip(cfg.encoders, m.encoders):
        patch.transformers(enc, k, after_layer=min(layer, spec.layers), prefix="keep")
    fused = sum(e.hidden for e in cfg.encoders)
    project = nn.Linear(fused, cfg.width, bias=False) if cfg.projector == "pixel-shuffle" else m.project

    def call():
        feats = m.vision(m.pixels(2))
        assert feats.shape[1] == k  # the prefix tokens travelled through the encoder and were dropped after it
        h, cache = m.run_llm(m.prefix_inputs(project(feats), 5))
        m.actions(h, cache)

    with torch.no_grad():
        return count_flops(call)


@pytest.mark.parametrize("head", ["flow", "flow-cross", "autoregressive", "parallel"])
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_after_layer_count_matches_running_the_patched_model(head, layer):
    # tiny SigLIP: 3 layers, a 4x4 grid; the fused configs add a 2-layer DINOv2 with 2 registers (split at min(L, 2))
    cfg = _tiny(head)
    counted = model_flops(cfg, 3, cameras=2, prompt_tokens=5, after_layer=layer)
    assert counted.total == _run_split_model(cfg, 3, layer)
    assert counted.after_layer == layer and counted.components["grids"] > 0


# pi0, K=16, full depth, measured by hand inside SigLIP with patch.transformers (CONTEXT section 8)
_PI0_INSIDE = {27: 66.0, 26: 66.5, 13: 73.1, 4: 77.6, 2: 78.7, 1: 79.2, 0: 79.7}


@pytest.mark.parametrize(
    "cameras,prompt,expected,free,zero",
    [(2, 32, _PI0_INSIDE, 80.6, 84.9), (3, 48, {0: 82.8}, 83.7, None)],
)
def test_after_layer_reproduces_measured_pi0_rows(cameras, prompt, expected, free, zero):
    rows = flops_table("pi0", [16], cameras=cameras, prompt_tokens=prompt, after_layers=list(expected))
    got = {r["after_layer"]: 100 * r["reduction"] for r in rows if r["after_layer"] is not None}
    assert set(got) == set(expected)
    for layer, target in expected.items():
        assert abs(got[layer] - target) <= 0.3, (layer, got[layer], target)
    free_row = next(r for r in rows if r["bound"] == "free-encoder")
    assert abs(100 * free_row["reduction"] - free) <= 0.3
    if zero is not None:
        assert abs(100 * rows[-1]["reduction"] - zero) <= 0.3
    assert rows[0]["label"] == "dense" and rows[-1]["label"] == "zero"
    if cameras == 2:
        assert rows[0]["total"] / GF == pytest.approx(3005.8, rel=0.001)


def test_after_last_layer_differs_from_post_projector_only_in_projector_and_grids():
    post = model_flops("pi0", 16, cameras=2, prompt_tokens=32)
    inside = model_flops("pi0", 16, cameras=2, prompt_tokens=32, after_layer=27)
    for part in ("vision", "llm_prefix", "action"):
        assert inside.components[part] == post.components[part]
    # the projector (1152 -> 2048) now runs on 2 x 16 tokens instead of 2 x 256
    assert inside.components["projector"] == 2 * (2 * 16) * 1152 * 2048
    assert post.components["projector"] == 16 * inside.components["projector"]
    # GridS at SigLIP's width (1152) instead of Gemma's (2048): cheaper, and nonzero
    assert 0 < inside.components["grids"] < post.components["grids"]


@pytest.mark.parametrize("model", ["pi0", "pi05", "smolvla", "openvla", "openvla-oft"])
def test_after_layer_table_every_model(model):
    depth = max(e.layers for e in get_config(model).encoders)
    layers = [0, 1, 2, depth // 2, depth]
    rows = flops_table(model, [16, 4], after_layers=layers)
    dense, zero = rows[0], rows[-1]
    assert dense["label"] == "dense" and zero["bound"] == "no-vision" and zero["components"]["vision"] == 0
    for k in (16, 4):
        block = [r for r in rows if r["k"] == k]
        inside, free = block[:-1], block[-1]
        assert [r["after_layer"] for r in inside] == sorted(layers, reverse=True)
        assert free["bound"] == "free-encoder" and free["fraction_of_bound"] == pytest.approx(1.0)
        reductions = [r["reduction"] for r in inside]
        assert reductions == sorted(reductions) and len(set(reductions)) == len(reductions)  # earlier: cheaper
        assert all(0 < r["fraction_of_bound"] < 1 for r in inside)
        assert free["reduction"] < zero["reduction"]
        assert all(r["encoder_depth"] == depth and r["notes"] for r in block)
    if model == "smolvla":
        assert any("plain Linear(768 -> 960)" in n for n in dense["notes"])


def test_after_layer_paper_accounting_counts_each_part_once():
    # pi0 defaults (3 camera slots); in the paper's convention the layers before and after GridS are two scans
    embed = 2 * (3 * 256) * 1152 * (3 * 14 * 14)  # SigLIP's patch convolution on 3 images, by hand
    dense = model_flops("pi0", None, accounting="paper").components["vision"]
    last, mid, first = (model_flops("pi0", 16, accounting="paper", after_layer=layer).components["vision"]
                        for layer in (27, 13, 0))  # fmt: skip
    full_first = model_flops("pi0", 16, after_layer=0).components["vision"]
    layer_k = (full_first - embed) / 27  # one SigLIP layer on 16 tokens per image
    assert last == dense  # one layer on N, none on K
    assert first == embed + layer_k  # no layer on N, one on K
    assert mid == embed + (dense - embed) + layer_k  # one of each


def test_after_layer_bad_input_names_the_valid_range():
    with pytest.raises(ValueError, match=r"after_layer 28 is outside \[0, 27\]"):
        model_flops("pi0", 16, after_layer=28)
    with pytest.raises(ValueError, match=r"after_layer -1 is outside \[0, 27\]"):
        model_flops("pi0", 16, after_layer=-1)
    with pytest.raises(ValueError, match=r"k 257 is outside \[1, 256\].*16x16"):
        model_flops("pi0", 257, after_layer=0)
    with pytest.raises(ValueError, match=r"k None is outside"):
        model_flops("pi0", None, after_layer=0)
    # SmolVLA: inside the encoder the grid is 32x32 (1024 patches), not the 64 tokens after pixel shuffle
    assert model_flops("smolvla", 1024, after_layer=6).visual_tokens == 2 * 1024
    with pytest.raises(ValueError, match=r"k 1025 is outside \[1, 1024\]"):
        model_flops("smolvla", 1025, after_layer=6)
    with pytest.raises(ValueError, match="empty"):
        flops_table("pi0", [16], after_layers=[])


def test_cli_flops_after_layer(capsys):
    assert main(["flops", "--model", "pi0", "--k", "16", "--cameras", "2", "--prompt-tokens", "32",
                 "--after-layer", "0", "27", "--json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [(r["label"], r["after_layer"], r["bound"]) for r in rows] == [
        ("dense", None, None), ("16", 27, None), ("16", 0, None), ("16", None, "free-encoder"),
        ("zero", None, "no-vision")]  # fmt: skip
    assert round(100 * rows[2]["reduction"], 1) == 79.7
    assert main(["flops", "--model", "smolvla", "--k", "16", "--after-layer", "0", "12"]) == 0
    out = capsys.readouterr().out
    assert "after layer L of 12" in out and " free " in out and "plain Linear(768 -> 960)" in out
    assert main(["flops", "--model", "pi0", "--after-layer", "28"]) == 2
    err = capsys.readouterr().err
    assert "--after-layer 28 is outside [0, 27]" in err and len(err.strip().splitlines()) == 1
    assert main(["flops", "--model", "openvla", "--k", "300", "--after-layer", "0"]) == 2
    assert "--k 300 is outside [1, 256]" in capsys.readouterr().err


def test_bench_latency_after_layer_smoke(tmp_path, capsys):
    out = tmp_path / "lat.json"
    code = main(["bench-latency", "--model", "smolvla", "--k", "4", "--cameras", "1", "--prompt-tokens", "8",
                 "--vision-layers", "2", "--llm-layers", "1", "--steps", "1", "--repeats", "1", "--warmup", "0",
                 "--threads", "1", "--after-layer", "0", "6", "12", "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["label"], r.get("after_layer"), r.get("split_built")) for r in rows] == [
        ("dense", None, None), ("4", 0, [0]), ("4", 6, [1]), ("4", 12, [2])]  # fmt: skip
    assert result["info"]["after_layers"] == [0, 6, 12]
    assert all(r["median_ms"]["grids"] > 0 and r["vision_extrapolated_ms"] > 0 for r in rows[1:])
    assert " built " in capsys.readouterr().out
    assert main(["bench-latency", "--model", "smolvla", "--after-layer", "13"]) == 2
    assert "--after-layer 13 is outside [0, 12]" in capsys.readouterr().err
