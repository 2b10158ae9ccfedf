"""GridS inside a Flax SigLIP-style encoder (openpi placement, ``examples/jax_openpi_standin.py``) against PyTorch.

The example's stand-in ViT with GridS before block L (the token map after L blocks -> K tokens, blocks L.. on
K tokens) must compute what a PyTorch reference of the same stand-in computes with the same weights: the
encoder weights converted by hand to the openpi checkpoint layout (blocks stacked over a layer axis) and then
by the example's :func:`split_scanned_blocks` / :func:`unstack_blocks`, GridS's by ``grids_vla.jax.torch_to_flax``.
Outputs, sampled coordinates and every block's output agree within float32 round-off. Needs the ``[jax]`` extra.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("flax")

import grids_vla.jax as gj  # noqa: E402
from grids_vla import GridSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # as in tests/test_jax_parity.py: |a - b| <= TOL * (1 + |b|)
GRAD_TOL = 5 * TOL  # gradients sum many float32 terms in another order (see tests/test_jax_parity.py)

# The test stand-in: 16 x 24 px images, 4 px patches -> a non-square 4 x 6 grid (24 tokens), K = 7.
IMAGE_HW, PATCH, GRID, K = (16, 24), 4, (4, 6), 7
WIDTH, DEPTH, HEADS, MLP, OUT = 24, 3, 2, 40, 16


def _load_example():
    name = "jax_openpi_standin_for_tests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "jax_openpi_standin.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # linen's dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


ex = _load_example()


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _close(a, b, tol: float = TOL) -> None:
    a, b = _np(a).astype(np.float64), _np(b).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b)
    assert np.all(err <= tol * (1 + np.abs(b))), f"max abs error {err.max():.3g}"


def _shapes(tree) -> dict:
    return jax.tree.map(lambda v: tuple(np.shape(v)), tree)


# -- the PyTorch reference of the stand-in -------------------------------------------------------------


class TorchBlock(torch.nn.Module):
    """The example's ``EncoderBlock``: pre-LN multi-head attention and tanh-GELU MLP (LayerNorm eps 1e-6, as Flax)."""

    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(WIDTH, eps=1e-6), torch.nn.LayerNorm(WIDTH, eps=1e-6)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.fc1, self.fc2 = torch.nn.Linear(WIDTH, MLP), torch.nn.Linear(MLP, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        y = self.ln1(x)
        q, k, v = (lin(y).view(b, n, HEADS, -1).transpose(1, 2) for lin in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + self.o((attn @ v).transpose(1, 2).reshape(b, n, WIDTH))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class TorchViT(torch.nn.Module):
    """The example's ``TinySigLIP`` in PyTorch, with ``grids_vla.GridSampler`` before block ``after_layer``."""

    def __init__(self, after_layer: int, grids_kwargs: dict) -> None:
        super().__init__()
        self.after_layer = after_layer
        self.embedding = torch.nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)
        self.pos_embedding = torch.nn.Parameter(torch.randn(1, GRID[0] * GRID[1], WIDTH) / math.sqrt(WIDTH))
        self.blocks = torch.nn.ModuleList(TorchBlock() for _ in range(DEPTH))
        self.encoder_norm = torch.nn.LayerNorm(WIDTH, eps=1e-6)
        self.head = torch.nn.Linear(WIDTH, OUT)
        self.grids = GridSampler(WIDTH, K, grid_size=GRID, **grids_kwargs)

    def forward(self, images: torch.Tensor):
        """NHWC images -> tokens ``(B, K, OUT)``, GridS's output, every block's output."""
        x = self.embedding(images.permute(0, 3, 1, 2))  # (B, WIDTH, h, w)
        hw = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2) + self.pos_embedding  # raster order, like the Flax reshape
        block_out = []
        for i in range(DEPTH + 1):
            if i == self.after_layer:
                grids_out = self.grids(x, hw)
                x = grids_out.tokens
            if i < DEPTH:
                x = self.blocks[i](x)
                block_out.append(x)
        return self.head(self.encoder_norm(x)), grids_out, block_out


def _linear(lin: torch.nn.Linear) -> dict:
    return {"kernel": _np(lin.weight).T.copy(), "bias": _np(lin.bias).copy()}


def _layernorm(ln: torch.nn.LayerNorm) -> dict:
    return {"scale": _np(ln.weight).copy(), "bias": _np(ln.bias).copy()}


def _block_to_flax(block: TorchBlock) -> dict:
    """One block in Flax names: MultiHeadDotProductAttention's kernels are ``(in, heads, head_dim)`` and
    ``(heads, head_dim, out)``, i.e. the PyTorch ``(out, in)`` weight transposed and split per head."""
    head_dim = WIDTH // HEADS

    def qkv(lin):
        return {
            "kernel": _np(lin.weight).T.reshape(WIDTH, HEADS, head_dim).copy(),
            "bias": _np(lin.bias).reshape(HEADS, head_dim).copy(),
        }

    attn = {"query": qkv(block.q), "key": qkv(block.k), "value": qkv(block.v)}
    attn["out"] = {"kernel": _np(block.o.weight).T.reshape(HEADS, head_dim, WIDTH).copy(), "bias": _np(block.o.bias)}
    return {
        "LayerNorm_0": _layernorm(block.ln1),
        "MultiHeadDotProductAttention_0": attn,
        "LayerNorm_1": _layernorm(block.ln2),
        "MlpBlock_0": {"Dense_0": _linear(block.fc1), "Dense_1": _linear(block.fc2)},
    }


def _checkpoint(ref: TorchViT) -> dict:
    """The encoder's weights in openpi's checkpoint layout: no GridS, blocks stacked in ``encoderblock``."""
    blocks = [_block_to_flax(b) for b in ref.blocks]
    return {
        "embedding": {
            "kernel": _np(ref.embedding.weight).transpose(2, 3, 1, 0).copy(),
            "bias": _np(ref.embedding.bias),
        },
        "pos_embedding": _np(ref.pos_embedding).copy(),
        "Transformer": {
            "encoderblock": jax.tree.map(lambda *vs: np.stack(vs), *blocks),
            "encoder_norm": _layernorm(ref.encoder_norm),
        },
        "head": _linear(ref.head),
    }


@torch.no_grad()
def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Noise on GridS's parameters, so its zero-initialised layers (coordinate head, geometry) matter."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        bound = 1 / np.sqrt(p.shape[1]) if p.dim() == 2 else 0.5
        p.add_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)


def _pair(after_layer: int, grids_kwargs: dict, scan: bool = True, seed: int = 0):
    """The PyTorch reference, the Flax stand-in and its params converted from the reference's weights."""
    torch.manual_seed(seed)
    ref = TorchViT(after_layer, grids_kwargs)
    _perturb(ref.grids, seed)
    mod = ex.TinySigLIP(
        num_classes=OUT,
        width=WIDTH,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_dim=MLP,
        patch=PATCH,
        scan=scan,
        grids_after=after_layer,
        grids_k=K,
        grid_size=GRID,
        grids_kwargs=grids_kwargs,
    )
    images = np.random.default_rng(seed).uniform(-1, 1, (2, *IMAGE_HW, 3)).astype(np.float32)
    checkpoint = _checkpoint(ref)
    convert = (lambda t: ex.split_scanned_blocks(t, after_layer)) if scan else ex.unstack_blocks
    params = {**checkpoint, "Transformer": convert(checkpoint["Transformer"])}
    params["Transformer"]["grids"] = gj.torch_to_flax(ref.grids.state_dict())["params"]  # GridS: new parameters
    like = jax.eval_shape(lambda: mod.init(jax.random.key(0), images))["params"]
    assert _shapes(params) == _shapes(like)  # same paths and shapes as the stand-in's own init
    return ref, mod, params, images


# -- parity ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after_layer", "scan", "grids_kwargs"),
    [
        (0, True, dict(hidden=16)),  # right after the patch + position embedding
        (1, True, dict(hidden=16, geometry="fourier")),
        (1, False, dict(hidden=16, align_corners=False)),  # the Python loop over the layer index
        (3, True, dict(hidden=16, predictor="attention")),  # after the last block, before encoder_norm
    ],
)
def test_in_encoder_parity_with_torch(after_layer, scan, grids_kwargs):
    ref, mod, params, images = _pair(after_layer, grids_kwargs, scan)
    tokens, out = jax.jit(lambda p, x: mod.apply({"params": p}, x))(params, images)
    with torch.no_grad():
        t_tokens, t_grids, t_blocks = ref(torch.tensor(images))

    _close(tokens, t_tokens)
    _close(out["encoder"]["grids"].coords, t_grids.coords)
    _close(out["encoder"]["grids"].tokens, t_grids.tokens)
    for i in range(DEPTH):
        _close(out["encoder"][f"block{i:02d}"]["+mlp"], t_blocks[i])
    assert tokens.shape == (2, K, OUT)


@pytest.mark.parametrize("after_layer", [0, 1, 2, 3])
def test_blocks_from_after_layer_on_see_k_tokens(after_layer):
    """Blocks 0..L-1 see the 24 patch tokens, blocks L.. see K tokens, in the stand-in and in the reference."""
    n = GRID[0] * GRID[1]
    ref, mod, params, images = _pair(after_layer, dict(hidden=16))
    shapes = jax.eval_shape(lambda p, x: mod.apply({"params": p}, x), params, images)[1]["encoder"]
    for part in ("sa", "+sa", "mlp", "+mlp"):
        seen = [shapes[f"block{i:02d}"][part].shape for i in range(DEPTH)]
        assert seen == [(2, n, WIDTH)] * after_layer + [(2, K, WIDTH)] * (DEPTH - after_layer), part
    assert shapes["grids"].tokens.shape == (2, K, WIDTH) and shapes["grids"].coords.shape == (2, K, 2)

    # the reference agrees on where the token count changes
    with torch.no_grad():
        t_blocks = ref(torch.tensor(images))[2]
    assert [b.shape[1] for b in t_blocks] == [n] * after_layer + [K] * (DEPTH - after_layer)


def test_in_encoder_gradients_match_torch():
    """Training through the split encoder: gradients of GridS's and the encoder's parameters agree with PyTorch."""
    ref, mod, params, images = _pair(1, dict(hidden=16), seed=3)
    weight = np.random.default_rng(3).standard_normal((2, K, OUT)).astype(np.float32)

    def loss(p):
        tokens, out = mod.apply({"params": p}, images)
        return (tokens * weight).sum() + out["encoder"]["grids"].coords.sum()

    grads = jax.jit(jax.grad(loss))(params)
    t_tokens, t_grids, _ = ref(torch.tensor(images))
    ((t_tokens * torch.tensor(weight)).sum() + t_grids.coords.sum()).backward()

    t_grids_grads = gj.torch_to_flax({n: p.grad for n, p in ref.grids.named_parameters()})["params"]
    flat_j = dict(jax.tree_util.tree_flatten_with_path(grads["Transformer"]["grids"])[0])
    flat_t = dict(jax.tree_util.tree_flatten_with_path(t_grids_grads)[0])
    assert flat_j.keys() == flat_t.keys()
    for key in flat_t:
        _close(flat_j[key], flat_t[key], GRAD_TOL)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in flat_j.values())
    _close(grads["pos_embedding"], ref.pos_embedding.grad, GRAD_TOL)
    # the first block's gradient flows back through GridS; after_layer=1 puts block 0 in encoderblock_before
    _close(
        grads["Transformer"]["encoderblock_before"]["MlpBlock_0"]["Dense_1"]["bias"][0],
        ref.blocks[0].fc2.bias.grad,
        GRAD_TOL,
    )


# -- conversion and errors --------------------------------------------------------------------------------


def test_split_join_unstack_are_exact():
    torch.manual_seed(0)
    checkpoint = _checkpoint(TorchViT(1, {}))["Transformer"]
    for after_layer in range(DEPTH + 1):
        split = ex.split_scanned_blocks(checkpoint, after_layer)
        parts = {name for name in ("encoderblock_before", "encoderblock_after") if name in split}
        expected = {"encoderblock_before"} if after_layer > 0 else set()
        assert parts == expected | ({"encoderblock_after"} if after_layer < DEPTH else set())
        if after_layer > 0:
            assert split["encoderblock_before"]["LayerNorm_0"]["scale"].shape == (after_layer, WIDTH)
        joined = ex.join_scanned_blocks(split)
        assert _shapes(joined) == _shapes(checkpoint)
        for (path, a), (_, b) in zip(
            jax.tree_util.tree_flatten_with_path(joined)[0], jax.tree_util.tree_flatten_with_path(checkpoint)[0]
        ):
            np.testing.assert_array_equal(a, b, err_msg=str(path))
    unstacked = ex.unstack_blocks(checkpoint)
    assert sorted(k for k in unstacked if k.startswith("encoderblock")) == [f"encoderblock_{i}" for i in range(DEPTH)]
    np.testing.assert_array_equal(
        unstacked["encoderblock_2"]["MlpBlock_0"]["Dense_0"]["kernel"],
        checkpoint["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"][2],
    )


@pytest.mark.parametrize("bad", [-1, DEPTH + 1, True, 1.5, "1", None])
def test_after_layer_out_of_range_is_a_one_line_error(bad):
    stacked = _checkpoint(TorchViT(1, {}))["Transformer"]
    calls = [lambda: ex.check_after_layer(bad, DEPTH), lambda: ex.split_scanned_blocks(stacked, bad)]
    if bad is not None:  # None means "no GridS" to the modules
        calls.append(lambda: ex.TinySigLIP(depth=DEPTH, grids_after=bad, grids_k=K))  # fails when built
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and f"[0, {DEPTH}]" in message and repr(bad) in message, message


def test_standin_pi0_rejects_a_bad_after_layer_before_building():
    with pytest.raises(ValueError, match=r"after_layer must be an int in \[0, 3\] .* got 4$"):
        ex.StandInPi0(16, ex.nnx.Rngs(0), after_layer=4)
    with pytest.raises(ValueError, match="after_layer needs grids_k"):
        ex.StandInPi0(None, ex.nnx.Rngs(0), after_layer=1)
