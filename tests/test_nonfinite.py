"""Non-finite input (issue 18): gathers stay in range, NaN comes out as NaN, on every grid, in PyTorch and JAX.

A NaN coordinate used to become the index INT64_MIN: an out-of-range gather on even widths (a crash on the
CPU, an out-of-bounds read on CUDA) and, by wrap-around luck, a NaN output on odd ones. Now the indices
come from a sanitised copy of the coordinates, so a NaN point reads in-range patches and its NaN weights
make the output NaN; inf features propagate as the arithmetic dictates; finite input is unchanged to
the bit (checked against a frozen copy of the samplers before the fix).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grids_vla import GridSampler
from grids_vla.sampling import bilinear_sample, coords_to_index_space, patch_centers

GRIDS = [(16, 16), (5, 7), (4, 6)]
NAN, INF = float("nan"), float("inf")
# Points 0-2 have a NaN coordinate, 3-6 an infinite one, 7 is finite; CLAMPED is where points 3-7 land.
POINTS = [(NAN, 0.5), (0.5, NAN), (NAN, NAN), (INF, 0.3), (-INF, 0.3), (0.6, INF), (0.6, -INF), (0.3, 0.7)]
CLAMPED = [(1.0, 0.3), (0.0, 0.3), (0.6, 1.0), (0.6, 0.0), (0.3, 0.7)]


@pytest.fixture
def gj():
    pytest.importorskip("flax")
    return pytest.importorskip("grids_vla.jax")


def _old_torch_sample(tokens, grid_size, coords, align_corners, snap):
    """``sampling.bilinear_sample`` as it was before the fix."""
    h, w = grid_size
    b, _, c = tokens.shape
    uv = coords_to_index_space(coords.to(torch.promote_types(coords.dtype, torch.float32)), grid_size, align_corners)
    lo = torch.minimum(torch.floor(uv).detach(), uv.new_tensor([max(w - 2, 0), max(h - 2, 0)]))
    frac = (torch.round(uv) - lo).detach() + (uv - uv.detach()) if snap else uv - lo
    frac, lo = frac.to(tokens.dtype), lo.long()
    x0, y0 = lo[..., 0], lo[..., 1]
    x1, y1 = x0 + int(w > 1), y0 + int(h > 1)
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    idx = torch.cat([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=1)
    f00, f01, f10, f11 = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(b, idx.shape[1], c)).chunk(4, dim=1)
    gx, gy = 1 - fx, 1 - fy
    return f00 * (gx * gy) + f01 * (fx * gy) + f10 * (gx * fy) + f11 * (fx * fy)


def _old_jax_sample(tokens, grid_size, coords, align_corners, snap):
    """``grids_vla.jax.sampling.bilinear_sample`` as it was before the fix."""
    import jax
    import jax.numpy as jnp

    from grids_vla.jax.sampling import coords_to_index_space

    h, w = grid_size
    sg = jax.lax.stop_gradient
    pos_dtype = jnp.promote_types(coords.dtype, jnp.float32)
    uv = coords_to_index_space(coords.astype(pos_dtype), grid_size, align_corners)
    lo = jnp.minimum(jnp.floor(sg(uv)), jnp.asarray([max(w - 2, 0), max(h - 2, 0)], dtype=pos_dtype))
    frac = (sg(jnp.round(uv) - lo) + (uv - sg(uv)) if snap else uv - lo).astype(tokens.dtype)
    lo = lo.astype(jnp.int32)
    x0, y0 = lo[..., 0], lo[..., 1]
    x1, y1 = x0 + int(w > 1), y0 + int(h > 1)
    idx = jnp.concatenate([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], axis=1)
    f00, f01, f10, f11 = jnp.split(jax.vmap(lambda t, i: t[i])(tokens, idx), 4, axis=1)
    fx, fy = frac[..., 0:1], frac[..., 1:2]
    gx, gy = 1 - fx, 1 - fy
    return f00 * (gx * gy) + f01 * (fx * gy) + f10 * (gx * fy) + f11 * (fx * fy)


def _finite_case(grid_size, align_corners):
    """Tokens, points (random, outside, exactly 0 and 1, every patch centre) and an output weight."""
    h, w = grid_size
    gen = torch.Generator().manual_seed(h * 100 + w)
    special = torch.tensor([-0.3, 0.0, 0.5, 1.0, 1.2])
    edges = torch.stack(torch.meshgrid(special, special, indexing="ij"), -1).reshape(-1, 2)
    coords = torch.cat([torch.rand(9, 2, generator=gen), edges, patch_centers(grid_size, align_corners)])
    coords = coords.unsqueeze(0).repeat(2, 1, 1)
    return torch.randn(2, h * w, 3, generator=gen), coords, torch.randn(2, coords.shape[1], 3, generator=gen)


# -- finite input: bit-identical to the samplers before the fix, values and gradients -----------------------


@pytest.mark.parametrize("snap", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", [*GRIDS, (1, 5), (3, 1)])
def test_finite_input_unchanged_to_the_bit(grid_size, align_corners, snap):
    tokens, coords, weight = _finite_case(grid_size, align_corners)
    results = []
    for fn in (bilinear_sample, _old_torch_sample):
        t, c = tokens.clone().requires_grad_(), coords.clone().requires_grad_()
        out = fn(t, grid_size, c, align_corners, snap)
        (out * weight).sum().backward()
        results.append((out, t.grad, c.grad))
    for new, old in zip(*results):
        assert torch.equal(new, old)


@pytest.mark.parametrize("snap", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", [*GRIDS, (1, 5), (3, 1)])
def test_jax_finite_input_unchanged_to_the_bit(grid_size, align_corners, snap, gj):
    import jax

    tokens, coords, weight = (a.numpy() for a in _finite_case(grid_size, align_corners))

    def run(fn, t, c):
        def loss(t, c):
            out = fn(t, grid_size, c, align_corners, snap)
            return (out * weight).sum(), out

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(t, c)

    both = jax.jit(lambda t, c: (run(gj.bilinear_sample, t, c), run(_old_jax_sample, t, c)))  # one compile
    results = both(tokens, coords)
    for new, old in zip(*(jax.tree.leaves(r) for r in results)):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old), strict=True)


# -- NaN / inf coordinates straight into bilinear_sample -----------------------------------------------------


@pytest.mark.parametrize("snap", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", GRIDS)
def test_nonfinite_coords(grid_size, align_corners, snap):
    h, w = grid_size
    tokens = torch.randn(1, h * w, 3, requires_grad=True)
    coords = torch.tensor([POINTS], requires_grad=True)
    out = bilinear_sample(tokens, grid_size, coords, align_corners, snap)  # used to raise: index out of range
    assert out[0, :3].isnan().all()
    assert torch.equal(out[0, 3:], bilinear_sample(tokens, grid_size, torch.tensor([CLAMPED]), align_corners, snap)[0])
    out[0, 3:].sum().backward()
    assert coords.grad[0, 3:].isfinite().all()


@pytest.mark.parametrize("snap", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", GRIDS)
def test_jax_nonfinite_coords_match_torch(grid_size, align_corners, snap, gj):
    h, w = grid_size
    tokens = np.random.default_rng(0).standard_normal((1, h * w, 3)).astype(np.float32)
    coords = np.array([POINTS], np.float32)
    out = np.asarray(gj.bilinear_sample(tokens, grid_size, coords, align_corners, snap))
    assert np.isnan(out[0, :3]).all() and np.isfinite(out[0, 3:]).all()
    ref = bilinear_sample(torch.tensor(tokens), grid_size, torch.tensor(coords), align_corners, snap)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-6, atol=1e-6)  # NaN where torch has NaN


# -- NaN / inf features straight into bilinear_sample ------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("snap", [False, True])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", GRIDS)
def test_nonfinite_features(grid_size, align_corners, snap, bad, gj):
    h, w = grid_size
    clean = torch.randn(1, h * w, 3)
    tokens = clean.clone()
    tokens[0, w - 1, 1] = bad  # top-right patch, one channel
    centres = patch_centers(grid_size, align_corners)
    # That patch; its left neighbour (the bad patch is a corner there, with weight 0); bottom-left, far off.
    coords = torch.stack([centres[w - 1], centres[w - 2], centres[(h - 1) * w]]).unsqueeze(0)
    out = bilinear_sample(tokens, grid_size, coords, align_corners, snap)
    torch.testing.assert_close(out[0, 0], tokens[0, w - 1], rtol=0, atol=0, equal_nan=True)  # NaN / the same inf
    assert out[0, 1, 1].isnan() and torch.equal(out[0, 1, [0, 2]], clean[0, w - 2, [0, 2]])  # bad * 0 is NaN
    assert torch.equal(out[0, 2], clean[0, (h - 1) * w])  # untouched by a patch outside its four neighbours
    j_out = gj.bilinear_sample(tokens.numpy(), grid_size, coords.numpy(), align_corners, snap)
    np.testing.assert_array_equal(np.asarray(j_out), out.numpy())


# -- the modules: a non-finite feature makes that sample's output NaN, the rest of the batch is untouched -------


@torch.no_grad()
def _sampler(grid_size, predictor, align_corners, check_finite=False):
    torch.manual_seed(0)
    mod = GridSampler(4, 3, hidden=8, predictor=predictor, align_corners=align_corners, check_finite=check_finite)
    for p in mod.parameters():  # move the zero-initialised layers off zero, so every layer matters
        p.add_(0.3 * torch.randn_like(p))
    h, w = grid_size
    return mod, torch.randn(2, h * w, 4)


def _with_bad(clean, bad):
    x = clean.clone()
    x[0, clean.shape[1] // 2, 1] = bad
    return x


@pytest.mark.parametrize("predictor", ["pooled", "attention"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", GRIDS)
def test_grid_sampler_nonfinite_features(grid_size, align_corners, predictor):
    mod, clean = _sampler(grid_size, predictor, align_corners)
    ref = mod(clean, grid_size)
    for bad in (NAN, INF, -INF):
        x = _with_bad(clean, bad).requires_grad_()
        out = mod(x, grid_size)  # used to raise on even widths
        assert out.tokens[0].isnan().all() and out.coords[0].isnan().all()
        assert torch.equal(out.tokens[1], ref.tokens[1]) and torch.equal(out.coords[1], ref.coords[1])
        out.tokens[1].sum().backward()
        assert x.grad[1].isfinite().all()


@pytest.mark.parametrize("predictor", ["pooled", "attention"])
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", GRIDS)
def test_jax_grid_sampler_nonfinite_features_match_torch(grid_size, align_corners, predictor, gj):
    import jax

    mod, clean = _sampler(grid_size, predictor, align_corners)
    j_mod = gj.GridSampler(4, 3, hidden=8, predictor=predictor, align_corners=align_corners)
    apply = jax.jit(lambda v, x: j_mod.apply(v, x, grid_size))
    variables = gj.torch_to_flax(mod.state_dict())
    for bad in (NAN, INF, -INF):
        x = _with_bad(clean, bad)
        ref, out = mod(x, grid_size), apply(variables, x.numpy())
        assert np.isnan(np.asarray(out.tokens[0])).all() and np.isfinite(np.asarray(out.tokens[1])).all()
        np.testing.assert_allclose(np.asarray(out.tokens), ref.tokens.detach().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.coords), ref.coords.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_check_finite_still_raises(bad):
    mod, clean = _sampler((4, 6), "pooled", True, check_finite=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        mod(_with_bad(clean, bad), (4, 6))


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_jax_check_finite_still_raises(bad, gj):
    mod, clean = _sampler((4, 6), "pooled", True)
    j_mod = gj.GridSampler(4, 3, hidden=8, check_finite=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        j_mod.apply(gj.torch_to_flax(mod.state_dict()), _with_bad(clean, bad).numpy(), (4, 6))
