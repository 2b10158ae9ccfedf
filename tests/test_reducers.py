"""Every peer under the shared interface, plus one behavioural property each."""

import pytest
import torch
from torch import nn

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
    list_reducers,
    pooling_grid,
    register_reducer,
)
from grids_vla.sampling import patch_centers

PEERS = ["grids", "topk", "random", "pool", "tokenlearner", "perceiver", "tome"]


def test_registry_lists_every_peer():
    assert set(PEERS + ["dense"]) <= set(list_reducers())
    with pytest.raises(ValueError, match="unknown reducer 'foo'; available: .*grids"):
        create_reducer("foo", 4, 2)


def test_registering_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register_reducer("grids")
        class Other(TokenReducer):
            pass


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("layout", ["nchw", "tokens"])
def test_shape_coords_and_gradient(name, layout):
    torch.manual_seed(0)
    r = create_reducer(name, 8, 6, grid_size=(5, 7))
    fmap = torch.randn(3, 8, 5, 7, requires_grad=True)
    x = fmap if layout == "nchw" else fmap.flatten(2).transpose(1, 2)
    out = r(x)
    assert out.tokens.shape == (3, 6, 8)
    assert out.coords.shape == (3, 6, 2) and ((out.coords >= 0) & (out.coords <= 1 + 1e-6)).all()
    out.tokens.square().sum().backward()
    assert fmap.grad.abs().sum() > 0
    for pname, p in r.named_parameters():
        assert p.grad is not None, f"{name}.{pname} gets no gradient"


@pytest.mark.parametrize("name", PEERS)
def test_rejects_bad_input_the_same_way(name):
    r = create_reducer(name, 8, 4, grid_size=(3, 3))
    with pytest.raises(ValueError, match="C=5 channels"):
        r(torch.randn(1, 9, 5))
    with pytest.raises(ValueError, match="k=10 exceeds"):
        create_reducer(name, 8, 10, grid_size=(3, 3))(torch.randn(1, 9, 8))


@pytest.mark.parametrize("name", ["topk", "random", "pool", "tokenlearner", "perceiver", "tome"])
def test_peers_without_conditioning_reject_cond(name):
    r = create_reducer(name, 4, 2, grid_size=(3, 3))
    with pytest.raises(ValueError, match="takes no cond"):
        r(torch.randn(1, 9, 4), cond=torch.randn(1, 3))
    with pytest.raises(ValueError, match="cannot return more tokens"):
        create_reducer(name, 4, 2, allow_oversample=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", PEERS)
def test_low_precision_dtype_preserved(name, dtype):
    r = create_reducer(name, 8, 4, grid_size=(4, 4)).to(dtype)
    out = r(torch.randn(2, 16, 8, dtype=dtype))
    assert out.tokens.dtype == dtype and torch.isfinite(out.tokens.float()).all()


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
