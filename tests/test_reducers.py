"""Every registered reducer under the shared interface, then what each one does that the others do not.

The first block is parametrized over ``list_reducers()``, so a newly registered reducer is tested without
editing this file.
"""

import pytest
import torch
from torch import nn

import grids_vla
from grids_vla.reducers import (
    DenseReducer,
    FastVPruner,
    RandomPatchReducer,
    TokenReducer,
    ToMeReducer,
    TopKReducer,
    UniformPoolReducer,
    create_reducer,
    fastv_prune,
    get_reducer_class,
    pooling_grid,
    register_reducer,
)
from grids_vla.sampling import patch_centers

REDUCERS = grids_vla.list_reducers()
B, DIM, K, GRID = 3, 8, 6, (4, 6)  # a non-square grid, so a transposed layout cannot pass


def build(name: str, grid=GRID, **kwargs) -> TokenReducer:
    """A reducer with non-zero weights everywhere; the identity ``dense`` needs ``k = H * W``."""
    k = grid[0] * grid[1] if name == "dense" else K
    torch.manual_seed(0)
    reducer = create_reducer(name, DIM, k, grid_size=grid, **kwargs)
    with torch.no_grad():  # zero-initialised layers (GridS's geometry MLP) would hide a part of the reducer
        for p in reducer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return reducer


def tokens(b: int = B, n: int = GRID[0] * GRID[1], seed: int = 1, **kwargs) -> torch.Tensor:
    return torch.randn(b, n, DIM, generator=torch.Generator().manual_seed(seed), **kwargs)


def call(reducer: TokenReducer, x: torch.Tensor, **kwargs):
    torch.manual_seed(2)  # the same random draws on every call, for the reducers that draw
    return reducer(x, **kwargs)


def test_registry_lists_every_builtin_reducer():
    assert {"dense", "grids", "topk", "random", "pool", "tokenlearner", "perceiver", "tome"} <= set(REDUCERS)
    with pytest.raises(ValueError, match="unknown reducer 'foo'; available: .*grids"):
        create_reducer("foo", 4, 2)


def test_registering_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register_reducer("grids")
        class Other(TokenReducer):
            pass


@pytest.mark.parametrize("name", REDUCERS)
def test_output_shape_and_coords(name):
    r = build(name)
    n_out = r.num_output_tokens(GRID)
    assert n_out == (GRID[0] * GRID[1] if name == "dense" else K)
    out = call(r, tokens())
    assert out.tokens.shape == (B, n_out, DIM)
    if out.coords is not None:
        assert out.coords.shape == (B, n_out, 2) and ((out.coords >= 0) & (out.coords <= 1 + 1e-6)).all()


@pytest.mark.parametrize("name", REDUCERS)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_feature_map_input_equals_token_input(name, layout):
    r = build(name)
    x = tokens()
    fmap = x.view(B, *GRID, DIM)
    fmap = fmap.permute(0, 3, 1, 2) if layout == "nchw" else fmap
    torch.testing.assert_close(call(r, fmap, layout=layout).tokens, call(r, x).tokens)


@pytest.mark.parametrize("name", REDUCERS)
def test_prefix_tokens_are_kept_in_front_or_dropped(name):
    plain = build(name)
    x = tokens()
    with_prefix = torch.cat([torch.randn(B, 1, DIM), x], dim=1)
    expected = call(plain, x).tokens
    keep = build(name, num_prefix_tokens=1, prefix="keep")
    out = call(keep, with_prefix).tokens
    assert keep.num_output_tokens(GRID) == 1 + plain.num_output_tokens(GRID)
    assert torch.equal(out[:, :1], with_prefix[:, :1])
    torch.testing.assert_close(out[:, 1:], expected)
    torch.testing.assert_close(call(build(name, num_prefix_tokens=1), with_prefix).tokens, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", REDUCERS)
def test_dtype_is_preserved(name, dtype):
    r = build(name).to(dtype)
    out = call(r, tokens(dtype=dtype))
    assert out.tokens.dtype == dtype and torch.isfinite(out.tokens.float()).all()


@pytest.mark.parametrize("name", REDUCERS)
def test_gradient_reaches_the_input_and_every_parameter(name):
    r = build(name)
    x = tokens().requires_grad_()
    out = call(r, x)
    (out.tokens * torch.randn_like(out.tokens)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in r.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"


@pytest.mark.parametrize("name", REDUCERS)
def test_samples_do_not_see_each_other(name):
    r = build(name)
    x = tokens()
    changed = x.clone()
    changed[0] = torch.randn(x.shape[1:])
    a, b = call(r, x), call(r, changed)
    assert not torch.allclose(a.tokens[0], b.tokens[0])
    torch.testing.assert_close(a.tokens[1:], b.tokens[1:])
    if a.coords is not None:
        torch.testing.assert_close(a.coords[1:], b.coords[1:])


@pytest.mark.parametrize("name", REDUCERS)
def test_bad_input_is_rejected_the_same_way(name):
    r = build(name)
    with pytest.raises(ValueError, match="C=5 channels"):
        r(torch.randn(1, GRID[0] * GRID[1], 5))
    with pytest.raises(ValueError, match="takes no cond"):  # built without conditioning
        r(tokens(), cond=torch.randn(B, 3))
    if not r.allow_oversample:
        with pytest.raises(ValueError, match="k=10 exceeds"):
            create_reducer(name, DIM, 10, grid_size=(3, 3))(torch.randn(1, 9, DIM))
    if not get_reducer_class(name).supports_oversample:
        with pytest.raises(ValueError, match="cannot return more tokens"):
            create_reducer(name, DIM, 10, allow_oversample=True)
    else:  # accepted; then a sampler really returns more tokens than the 3x3 grid has (dense's k must equal H*W)
        r = create_reducer(name, DIM, 9 if name == "dense" else 10, allow_oversample=True, grid_size=(3, 3))
        assert r(torch.randn(1, 9, DIM)).tokens.shape[1] == (9 if name == "dense" else 10)


def test_dense_is_identity():
    x = torch.randn(2, 20, 4)
    out = DenseReducer(4, grid_size=(4, 5))(x)
    assert torch.equal(out.tokens, x)
    assert DenseReducer(4, grid_size=(4, 5)).num_output_tokens() == 20
    with pytest.raises(ValueError, match="k=16\\) got a 4x5 grid of 20"):
        DenseReducer(4, 16, grid_size=(4, 5))(x)


@pytest.mark.parametrize("name", ["pool", "tome", "tokenlearner"])
def test_averaging_peers_keep_a_constant_map_constant(name):
    torch.manual_seed(0)
    r = create_reducer(name, 4, 6, grid_size=(6, 8))
    const = torch.tensor([0.5, -1.0, 2.0, 3.0])
    out = r(const.view(1, 1, 4).expand(2, 48, 4))
    torch.testing.assert_close(out.tokens, const.view(1, 1, 4).expand(2, 6, 4))


def test_pool_averages_its_cells():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    r = UniformPoolReducer(1, 4)
    assert pooling_grid(4, (4, 4)) == (2, 2)
    out = r(x)
    torch.testing.assert_close(out.tokens.flatten(), torch.tensor([2.5, 4.5, 10.5, 12.5]))
    cells = torch.tensor([[1, 1], [5, 1], [1, 5], [5, 5]]) / 6  # cell centres at index 0.5 and 2.5 of 0..3
    torch.testing.assert_close(out.coords[0], cells)
    assert pooling_grid(8, (4, 16)) == (1, 8)
    with pytest.raises(ValueError, match="k=7 has no rows x cols"):
        pooling_grid(7, (4, 4))


def test_topk_picks_the_highest_scored_patches():
    r = TopKReducer(3, 4, grid_size=(4, 4))
    with torch.no_grad():  # score = gelu(first channel after LayerNorm)
        for p in r.scorer.parameters():
            p.zero_()
        r.scorer[0].weight.fill_(1.0)
        r.scorer[1].weight[0, 0] = 1.0
        r.scorer[3].weight[0, 0] = 1.0
    x = torch.zeros(2, 16, 3)
    x[..., 1] = 1.0  # cold tokens: (0, 1, 0); after LayerNorm their first channel is negative
    hot = torch.tensor([[1, 5, 10, 15], [0, 2, 3, 12]])
    for b in range(2):
        x[b, hot[b]] = torch.tensor([10.0, 0.0, 0.0])
    out = r(x)
    assert torch.equal(out.aux["indices"], hot)
    torch.testing.assert_close(out.tokens, torch.stack([x[b, hot[b]] for b in range(2)]))
    torch.testing.assert_close(out.coords[1], patch_centers((4, 4), True)[hot[1]])


def test_topk_gumbel_explores_only_in_training():
    torch.manual_seed(0)
    r = TopKReducer(4, 3, gumbel=True, grid_size=(6, 6))
    x = torch.randn(1, 36, 4)
    r.eval()
    assert torch.equal(r(x).aux["indices"], r(x).aux["indices"])
    r.train()
    picks = {tuple(r(x).aux["indices"][0].tolist()) for _ in range(10)}
    assert len(picks) > 1


def test_random_patches_are_distinct_and_seeded():
    r = RandomPatchReducer(2, 9, grid_size=(4, 4))
    x = torch.randn(5, 16, 2)
    torch.manual_seed(1)
    a = r(x).aux["indices"]
    torch.manual_seed(1)
    assert torch.equal(a, r(x).aux["indices"])
    assert all(len(set(row.tolist())) == 9 for row in a)


def test_tome_merges_duplicates_first_and_conserves_size():
    # Pairs of identical tokens must be merged with each other before anything else.
    base = torch.randn(8, 6)
    x = base.repeat_interleave(2, dim=0).unsqueeze(0)  # 16 tokens = 8 duplicate pairs
    out = ToMeReducer(6, 8, grid_size=(4, 4))(x)
    assert out.aux["sizes"].sum() == 16 and (out.aux["sizes"] == 2).all()
    got = sorted(map(tuple, out.tokens[0].round(decimals=5).tolist()))
    assert got == sorted(map(tuple, base.round(decimals=5).tolist()))


@pytest.mark.parametrize("name", ["tokenlearner", "perceiver"])
def test_attention_maps_are_distributions(name):
    out = create_reducer(name, 8, 3, grid_size=(4, 4))(torch.randn(2, 16, 8))
    torch.testing.assert_close(out.aux["attention"].sum(-1), torch.ones(2, 3))


class TinyLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)

    def forward(self, x):
        y, w = self.attn(x, x, x, need_weights=True, average_attn_weights=False)
        return x + y, w


def test_fastv_keeps_the_most_attended_visual_tokens():
    torch.manual_seed(0)
    b, length, heads = 2, 12, 2
    attn = torch.rand(b, heads, length, length).softmax(-1)
    attn[:, :, :, 5] += 1.0  # visual token 5 (span 3..10) gets the most attention
    attn[:, :, :, 8] += 0.5
    hidden = torch.randn(b, length, 4)
    out, span, kept = fastv_prune(hidden, attn, (3, 8), keep=2)
    assert span == (3, 2) and out.shape == (b, 12 - 8 + 2, 4)
    assert kept[0].tolist() == [0, 1, 2, 5, 8, 11]
    assert torch.equal(out, hidden[:, kept[0]])


def test_fastv_pruner_inside_a_layer_loop():
    torch.manual_seed(0)
    layers = [TinyLayer(8) for _ in range(4)]
    pruner = FastVPruner(prune_after=1, keep=3)
    x = torch.randn(2, 2 + 16 + 3, 8)  # [text 2, visual 16, state/action 3]
    visual = (2, 16)
    for i, layer in enumerate(layers):
        x, w = layer(x)
        x, visual, kept = pruner(i, x, w, visual)
        if i == 1:
            assert kept.shape == (2, 2 + 3 + 3)
    assert x.shape == (2, 8, 8) and visual == (2, 3)
    with pytest.raises(ValueError, match="keep must be in \\[1, 16\\]"):
        fastv_prune(torch.randn(1, 20, 4), torch.rand(1, 1, 20, 20), (2, 16), keep=17)
    with pytest.raises(ValueError, match="outside the sequence"):
        fastv_prune(torch.randn(1, 20, 4), torch.rand(1, 1, 20, 20), (10, 16), keep=2)
