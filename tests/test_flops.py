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
