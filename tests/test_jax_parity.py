"""Parity of the JAX / Flax GridS (``grids_vla.jax``) with the PyTorch reference.

Same weights (converted with ``torch_to_flax``) and inputs must give the same tokens, coordinates,
aux tensors and gradients (features, coordinates, parameters) within 1e-5 in float32, over random
shapes and options; the weight conversion must round-trip bit for bit. Needs the ``[jax]`` extra.
"""

from __future__ import annotations

import functools
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("flax")

import grids_vla.jax as gj  # noqa: E402
from grids_vla import GridSampler, MultiCameraGridS  # noqa: E402
from grids_vla import sampling as ts  # noqa: E402

TOL = 1e-5
# Gradients are sums over many float32 terms whose order differs between XLA and PyTorch: a few ulps
# of the largest term, so they get a 5x looser bound than the outputs (issue: outputs within 1e-5).
GRAD_TOL = 5 * TOL
ROOT = Path(__file__).resolve().parents[1]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _close(a, b, tol: float = TOL) -> float:
    """Assert ``|a - b| <= tol * (1 + |b|)`` elementwise; return the max absolute error."""
    a, b = _np(a).astype(np.float64), _np(b).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b)
    assert np.all(err <= tol * (1 + np.abs(b))), f"max abs error {err.max():.3g}"
    return float(err.max()) if err.size else 0.0


@torch.no_grad()
def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Add realistic noise to every parameter, so the zero-initialised layers matter in the comparison."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        bound = 1 / np.sqrt(p.shape[1]) if p.dim() == 2 else 0.5
        p.add_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)


def _init(module, *args, **kwargs):
    """``module.init`` under ``jax.jit`` (eager Flax init compiles every primitive separately: slow)."""
    return jax.jit(lambda key, args: module.init(key, *args, **kwargs))(jax.random.key(0), args)


def _apply(module, variables, *args, **kwargs):
    return jax.jit(lambda v, args: module.apply(v, *args, **kwargs))(variables, args)


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, (*prefix, k)))
        return out
    return {"/".join(prefix): np.asarray(tree)}


# -- sampling functions: values and gradients, including the clamps and patch centres ----------------


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid", [(1, 1), (1, 5), (4, 1), (3, 4)])
def test_bilinear_sample_values_and_grads(grid, align_corners):
    h, w = grid
    rng = np.random.default_rng(h * 10 + w)
    tokens = rng.standard_normal((2, h * w, 3)).astype(np.float32)
    special = np.array([0.0, 1.0, 0.5, -0.2, 1.3, 0.25], np.float32)  # clamps, centres, outside
    centres = _np(ts.patch_centers(grid, align_corners))
    coords = np.concatenate(
        [
            rng.uniform(0, 1, (2, 7, 2)).astype(np.float32),
            np.broadcast_to(np.stack(np.meshgrid(special, special), -1).reshape(-1, 2), (2, 36, 2)),
            np.broadcast_to(centres, (2, *centres.shape)),
        ],
        axis=1,
    ).astype(np.float32)
    weight = rng.standard_normal((2, coords.shape[1], 3)).astype(np.float32)

    def torch_side(nearest):
        tt, tc = torch.tensor(tokens, requires_grad=True), torch.tensor(coords, requires_grad=True)
        out = ts.bilinear_sample(tt, grid, tc, align_corners, snap=nearest)
        c = ts.snap_to_patch_centers(tc, grid, align_corners) if nearest else tc
        frac = ts.coords_to_image_fraction(c, grid, align_corners)
        ((out * torch.tensor(weight)).sum() + (frac * tc).sum()).backward()
        return out, tt.grad, tc.grad

    def jax_side(tok, crd):
        outs = []
        for nearest in (False, True):
            out = gj.bilinear_sample(tok, grid, crd, align_corners, snap=nearest)
            c = gj.snap_to_patch_centers(crd, grid, align_corners) if nearest else crd
            frac = gj.coords_to_image_fraction(c, grid, align_corners)
            outs.append((out, (out * weight).sum() + (frac * crd).sum()))
        return outs

    def loss(tok, crd, nearest):
        return jax_side(tok, crd)[nearest][1]

    @jax.jit
    def both(tok, crd):
        return [(jax_side(tok, crd)[n][0], jax.grad(loss, argnums=(0, 1))(tok, crd, n)) for n in (0, 1)]

    for nearest, (j_out, (g_tok, g_crd)) in zip((False, True), both(tokens, coords)):
        t_out, t_gtok, t_gcrd = torch_side(nearest)
        _close(j_out, t_out)
        _close(g_tok, t_gtok)
        _close(g_crd, t_gcrd)
    _close(gj.patch_centers(grid, align_corners), ts.patch_centers(grid, align_corners), 0)
    frac = np.random.default_rng(0).uniform(-0.1, 1.1, (5, 2)).astype(np.float32)
    _close(
        gj.image_fraction_to_coords(frac, grid, align_corners),
        ts.image_fraction_to_coords(torch.tensor(frac), grid, align_corners),
        0,
    )


# -- the module over random shapes and options --------------------------------------------------------


@st.composite
def configs(draw):
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    oversample = draw(st.booleans()) and draw(st.booleans())
    k = draw(st.integers(1, h * w + (3 if oversample else 0)))
    coords = draw(st.sampled_from(["predicted", "predicted", "fixed-grid"]))
    n_prefix = draw(st.integers(0, 2))
    layout = "tokens" if n_prefix else draw(st.sampled_from(["tokens", "nchw", "nhwc"]))
    cond = draw(st.sampled_from([None, "film", "concat"])) if coords == "predicted" else None
    look_dim = draw(st.sampled_from([None, None, 1, 3, 7])) if coords == "predicted" else None
    predictor = draw(st.sampled_from(["pooled", "attention"]))
    kwargs = dict(
        hidden=draw(st.integers(1, 12)),
        predictor=predictor,
        attention_grad=predictor == "attention" and coords == "predicted" and draw(st.booleans()),
        coords=coords,
        sampling=draw(st.sampled_from(["bilinear", "nearest"])),
        geometry=draw(st.sampled_from(["mlp", "fourier", "none", True, False])),
        geometry_hidden=draw(st.integers(1, 10)),
        fourier_bands=draw(st.integers(1, 8)),
        cond_dim=draw(st.integers(1, 4)) if cond else None,
        cond_mode=cond or "film",
        look_dim=look_dim,
        context=draw(st.booleans()),
        grid_size=(h, w) if draw(st.booleans()) else None,
        num_prefix_tokens=n_prefix,
        prefix=draw(st.sampled_from(["drop", "keep"])),
        allow_oversample=oversample,
        align_corners=draw(st.booleans()),
    )
    return dict(
        dim=draw(st.integers(1, 6)),
        k=k,
        kwargs=kwargs,
        batch=draw(st.integers(1, 3)),
        grid=(h, w),
        layout=layout,
        seed=draw(st.integers(0, 2**16)),
    )


def _make_input(cfg, rng):
    b, (h, w), dim, n = cfg["batch"], cfg["grid"], cfg["dim"], cfg["kwargs"]["num_prefix_tokens"]
    shape = {"tokens": (b, n + h * w, dim), "nchw": (b, dim, h, w), "nhwc": (b, h, w, dim)}[cfg["layout"]]
    x = rng.standard_normal(shape).astype(np.float32)
    cd, ld = cfg["kwargs"]["cond_dim"], cfg["kwargs"].get("look_dim")
    cond = rng.standard_normal((b, cd)).astype(np.float32) if cd else None
    look = rng.standard_normal((b, h * w, ld)).astype(np.float32) if ld else None
    return x, cond, look


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs())
def test_module_parity_random_shapes(cfg):
    _check_parity(cfg)


def _fixed(dim, k, grid, layout="tokens", batch=2, seed=0, **kwargs):
    base = dict(hidden=5, geometry="mlp", cond_dim=None, num_prefix_tokens=0, grid_size=None)
    return dict(dim=dim, k=k, kwargs={**base, **kwargs}, batch=batch, grid=grid, layout=layout, seed=seed)


@pytest.mark.parametrize(
    "cfg",
    [
        # look_dim != dim (pooled, FiLM / concat; attention, with and without cond), and context alone.
        _fixed(4, 5, (3, 4), look_dim=6, cond_dim=2, context=True, num_prefix_tokens=1, prefix="keep"),
        _fixed(5, 3, (2, 3), "nhwc", look_dim=2, cond_dim=3, cond_mode="concat", sampling="nearest", seed=1),
        _fixed(4, 6, (3, 3), "nchw", predictor="attention", look_dim=7, cond_dim=2, context=True, seed=2),
        _fixed(6, 4, (2, 4), predictor="attention", look_dim=3, geometry="fourier", fourier_bands=4, seed=3),
        _fixed(4, 5, (3, 2), predictor="attention", look_dim=4, context=True, align_corners=False, seed=4),
        _fixed(3, 4, (2, 3), coords="fixed-grid", context=True, seed=5),
        _fixed(3, 4, (3, 3), context=True, geometry="none", seed=6),
        # attention_grad: the straight-through term's gradient reaches the maps (and x) the same way
        _fixed(4, 5, (3, 4), predictor="attention", attention_grad=True, seed=7),
        _fixed(4, 6, (3, 3), "nchw", predictor="attention", attention_grad=True, look_dim=3, cond_dim=2,
               sampling="nearest", seed=8),
    ],
)
def test_module_parity_look_and_context(cfg):
    _check_parity(cfg)


def _check_parity(cfg):
    """Same weights and inputs through both modules: tokens, coords, aux and every gradient agree."""
    torch.manual_seed(cfg["seed"])
    t_mod = GridSampler(cfg["dim"], cfg["k"], **cfg["kwargs"])
    _perturb(t_mod, cfg["seed"])
    j_mod = gj.GridSampler(cfg["dim"], cfg["k"], **cfg["kwargs"])
    rng = np.random.default_rng(cfg["seed"])
    x, cond, look = _make_input(cfg, rng)
    grid = cfg["grid"] if cfg["kwargs"]["grid_size"] is None or cfg["layout"] != "tokens" else None
    if cfg["layout"] != "tokens" and rng.random() < 0.5:
        grid = None  # a feature map carries its own grid
    layout = cfg["layout"] if cfg["layout"] != "nchw" or rng.random() < 0.5 else None  # None means nchw for 4-D

    # Structure of the converted weights equals a fresh Flax init's (checked by ``like``).
    like = jax.eval_shape(lambda: j_mod.init(jax.random.key(0), x, grid, cond=cond, layout=layout, look=look))
    variables = gj.torch_to_flax(t_mod.state_dict(), like=like)

    xt = torch.tensor(x, requires_grad=True)
    ct = None if cond is None else torch.tensor(cond, requires_grad=True)
    lt = None if look is None else torch.tensor(look, requires_grad=True)
    t_out = t_mod(xt, grid, cond=ct, layout=layout, look=lt)
    w_tok = rng.standard_normal(tuple(t_out.tokens.shape)).astype(np.float32)
    w_crd = rng.standard_normal(tuple(t_out.coords.shape)).astype(np.float32)
    ((t_out.tokens * torch.tensor(w_tok)).sum() + (t_out.coords * torch.tensor(w_crd)).sum()).backward()

    def loss(params, x, cond, look):
        out = j_mod.apply({"params": params}, x, grid, cond=cond, layout=layout, look=look)
        return (out.tokens * w_tok).sum() + (out.coords * w_crd).sum(), out

    argnums = (0, 1) + ((2,) if cond is not None else ()) + ((3,) if look is not None else ())
    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))
    (_, j_out), grads = grad_fn(variables["params"], x, cond, look)
    grads = dict(zip(argnums, grads, strict=True))

    _close(j_out.tokens, t_out.tokens)
    _close(j_out.coords, t_out.coords)
    assert set(j_out.aux) == set(t_out.aux)
    for key in t_out.aux:
        _close(j_out.aux[key], t_out.aux[key])
    _close(grads[1], xt.grad, GRAD_TOL)
    if cond is not None:
        _close(grads[2], ct.grad, GRAD_TOL)
    if look is not None:
        _close(grads[3], lt.grad, GRAD_TOL)
    t_grads = gj.torch_to_flax({n: p.grad for n, p in t_mod.named_parameters()})["params"]
    flat_j, flat_t = _flat(jax.tree.map(np.asarray, grads[0])), _flat(t_grads)
    assert flat_j.keys() == flat_t.keys()
    for key in flat_t:
        _close(flat_j[key], flat_t[key], GRAD_TOL)


def test_parity_with_fresh_init_and_jit_matches_eager():
    """A fresh PyTorch module (zero last layers, anchors) converted to Flax gives the same output, eager and jit."""
    torch.manual_seed(0)
    kwargs = dict(hidden=32, geometry="fourier", grid_size=(6, 8), num_prefix_tokens=1, prefix="keep")
    t_mod = GridSampler(16, 12, **kwargs)
    j_mod = gj.GridSampler(16, 12, **kwargs)
    variables = gj.torch_to_flax(t_mod.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 49, 16)).astype(np.float32)
    t_out = t_mod(torch.tensor(x))
    eager = j_mod.apply(variables, x)
    jitted = jax.jit(lambda v, x: j_mod.apply(v, x))(variables, x)
    _close(eager.tokens, t_out.tokens)
    _close(eager.coords, t_out.coords)
    np.testing.assert_array_equal(np.asarray(jitted.coords), np.asarray(eager.coords))
    _close(jitted.tokens, eager.tokens, 1e-6)
    assert jitted.tokens.shape == (2, 13, 16)
    np.testing.assert_array_equal(np.asarray(jitted.tokens[:, 0]), x[:, 0])  # kept prefix passes through


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(grid_size=(16, 16)),
        dict(grid_size=(6, 10), align_corners=False, cond_dim=3),
        dict(grid_size=(3, 5), cond_dim=2, cond_mode="concat", geometry="fourier"),
        dict(),  # no grid_size: the anchors come from (1, 1), as in PyTorch
        dict(grid_size=(4, 4), look_dim=2, context=True),
        dict(grid_size=(3, 5), look_dim=3, cond_dim=2, cond_mode="concat"),
        dict(grid_size=(4, 4), look_dim=2, cond_dim=3, predictor="attention", context=True),
        dict(grid_size=(3, 4), predictor="attention", context=True),
    ],
)
def test_flax_init_matches_torch_init(kwargs):
    t_mod = GridSampler(8, 9, hidden=7, **kwargs)
    j_mod = gj.GridSampler(8, 9, hidden=7, **kwargs)
    h, w = kwargs.get("grid_size", (4, 4))
    x = np.zeros((1, h * w, 8), np.float32)
    cond = np.zeros((1, kwargs["cond_dim"]), np.float32) if "cond_dim" in kwargs else None
    look = np.zeros((1, h * w, kwargs["look_dim"]), np.float32) if "look_dim" in kwargs else None
    params = _init(j_mod, x, grid_size=(h, w), cond=cond, look=look)["params"]
    ref = gj.torch_to_flax(t_mod.state_dict(), like={"params": params})["params"]  # same paths and shapes
    flat = _flat(params)
    zero = ["mlp_2/kernel", "geometry/mlp_2/kernel", "geometry/mlp_2/bias", "film/kernel", "film/bias",
            "point_attn/queries", "point_attn/cond/kernel", "point_attn/cond/bias", "context_1/kernel",
            "context_1/bias"]
    for path in zero:
        if path in flat:
            assert not flat[path].any(), path
    assert ("context_1/kernel" in flat) == bool(kwargs.get("context"))
    head_dim = kwargs.get("look_dim", 8)  # what stage 1 reads: its first layer's fan-in
    if kwargs.get("predictor") == "attention":
        norm, first = params["point_attn"]["norm"], params["point_attn"]["key"]["kernel"]
    else:
        _close(params["mlp_2"]["bias"], ref["mlp_2"]["bias"], 1e-6)  # anchor logits
        norm, first = params["norm"], params["mlp_0"]["kernel"]
        head_dim += kwargs["cond_dim"] if kwargs.get("cond_mode") == "concat" else 0
    np.testing.assert_array_equal(norm["scale"], 1)
    assert norm["scale"].shape == (kwargs.get("look_dim", 8),)
    bound = 1 / np.sqrt(head_dim)
    assert 0.7 * bound < np.abs(first).max() <= bound  # torch.nn.Linear's default range for that fan-in
    if kwargs.get("context"):
        np.testing.assert_array_equal(params["context_0"]["scale"], 1)
        assert params["context_0"]["scale"].shape == (8,) and params["context_1"]["kernel"].shape == (8, 8)


# -- random coordinates ----------------------------------------------------------------------------


def test_random_mode_keys_and_parity(monkeypatch):
    j_mod = gj.GridSampler(4, 5, coords="random", grid_size=(3, 3), geometry="mlp")
    x = np.random.default_rng(0).standard_normal((2, 9, 4)).astype(np.float32)
    variables = _init(j_mod, x)  # no "grids" stream at init: falls back to the params key
    run = jax.jit(lambda v, x, k: j_mod.apply(v, x, rng=k))
    a, a2, c = (
        run(variables, x, jax.random.key(2)),
        run(variables, x, jax.random.key(2)),
        run(variables, x, jax.random.key(3)),
    )
    stream = jax.jit(lambda v, x, k: j_mod.apply(v, x, rngs={"grids": k}))
    b, b2 = stream(variables, x, jax.random.key(2)), stream(variables, x, jax.random.key(4))
    np.testing.assert_array_equal(np.asarray(a.coords), np.asarray(a2.coords))
    assert not np.allclose(np.asarray(a.coords), np.asarray(c.coords))
    assert not np.allclose(np.asarray(b.coords), np.asarray(b2.coords))
    assert a.coords.shape == b.coords.shape == (2, 5, 2)
    assert float(a.coords.min()) >= 0 and float(a.coords.max()) <= 1
    with pytest.raises(ValueError, match="needs a PRNG key"):
        j_mod.apply(variables, x)
    # Same coordinates through the PyTorch module (its torch.rand replaced by the JAX draw).
    torch.manual_seed(0)
    t_mod = GridSampler(4, 5, coords="random", grid_size=(3, 3), geometry="mlp")
    _perturb(t_mod, 0)
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.tensor(np.asarray(a.coords)))
    t_out = t_mod(torch.tensor(x))
    j_out = run(gj.torch_to_flax(t_mod.state_dict()), x, jax.random.key(2))
    _close(j_out.tokens, t_out.tokens)


# -- multi-camera --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shared, cond_dim, extra",
    [
        (True, 3, {}),
        (False, None, {}),
        (True, 2, dict(look_dim=5, context=True)),
        (False, 2, dict(look_dim=3, predictor="attention", context=True)),
        (True, None, dict(coords="fixed-grid")),  # shared, no predicted points: the camera identity is unused
        (True, 2, dict(coords="fixed-grid", context=True)),
    ],
)
def test_multicamera_parity(shared, cond_dim, extra):
    cams = ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    kwargs = dict(hidden=8, grid_size=(4, 4), **extra)
    torch.manual_seed(1)
    t_mod = MultiCameraGridS(cams, 6, 4, shared=shared, camera_dim=5, cond_dim=cond_dim, **kwargs)
    _perturb(t_mod, 1)
    j_mod = gj.MultiCameraGridS(cams, 6, 4, shared=shared, camera_dim=5, cond_dim=cond_dim, sampler_kwargs=kwargs)
    rng = np.random.default_rng(1)
    xs = {c: rng.standard_normal((2, 16, 6)).astype(np.float32) for c in cams}
    cond = None if cond_dim is None else rng.standard_normal((2, cond_dim)).astype(np.float32)
    ld = extra.get("look_dim")
    look = None if ld is None else {c: rng.standard_normal((2, 16, ld)).astype(np.float32) for c in cams}
    like = jax.eval_shape(lambda: j_mod.init(jax.random.key(0), xs, cond=cond, look=look))
    variables = gj.torch_to_flax(t_mod.state_dict(), like=like)
    t_out = t_mod(
        {c: torch.tensor(v) for c, v in xs.items()},
        cond=None if cond is None else torch.tensor(cond),
        look=None if look is None else {c: torch.tensor(v) for c, v in look.items()},
    )
    j_out = jax.jit(lambda v, xs, cond, look: j_mod.apply(v, xs, cond=cond, look=look))(variables, xs, cond, look)
    assert list(j_out) == cams
    for c in cams:
        _close(j_out[c].tokens, t_out[c].tokens)
        _close(j_out[c].coords, t_out[c].coords)
    # A missing or unknown camera, in the tokens or in look, fails with PyTorch's message.
    bad = [({cams[0]: xs[cams[0]]}, look), ({**xs, "top": xs[cams[0]]}, look)]
    if look is not None:
        bad += [(xs, {c: look[c] for c in cams[1:]}), (xs, {**look, "top": look[cams[0]]})]

    def torch_call(inputs, look):
        tensors = {c: torch.tensor(v) for c, v in inputs.items()}
        t_look = None if look is None else {c: torch.tensor(v) for c, v in look.items()}
        t_mod(tensors, cond=None if cond is None else torch.tensor(cond), look=t_look)

    for inputs, lk in bad:
        t_err = _message(functools.partial(torch_call, inputs, lk))
        j_err = _message(functools.partial(j_mod.apply, variables, inputs, cond=cond, look=lk))
        assert j_err == t_err and t_err[0] is KeyError, (j_err, t_err)


# -- conversion ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: GridSampler(8, 4, hidden=6, cond_dim=3, grid_size=(4, 4)),
        lambda: GridSampler(8, 4, hidden=6, cond_dim=3, cond_mode="concat", geometry="fourier"),
        lambda: GridSampler(8, 4, coords="fixed-grid"),
        lambda: MultiCameraGridS(["a", "b"], 8, 4, shared=True, hidden=6),
        lambda: MultiCameraGridS(["a", "b"], 8, 4, shared=False, cond_dim=2, hidden=6),
        lambda: GridSampler(8, 4, hidden=6, cond_dim=3, look_dim=5, context=True),
        lambda: GridSampler(8, 4, hidden=6, cond_dim=2, predictor="attention", look_dim=3, context=True),
        lambda: GridSampler(8, 4, coords="fixed-grid", context=True),
        lambda: MultiCameraGridS(["a", "context"], 8, 4, shared=False, hidden=6, look_dim=3, context=True),
        lambda: MultiCameraGridS(["a", "b"], 8, 4, shared=True, hidden=6, predictor="attention", context=True),
    ],
)
def test_conversion_round_trip_is_exact(make):
    torch.manual_seed(2)
    t_mod = make()
    _perturb(t_mod, 2)
    sd = t_mod.state_dict()
    back = gj.flax_to_torch(gj.torch_to_flax(sd))
    assert back.keys() == sd.keys()
    for key, value in sd.items():
        assert back[key].dtype == value.numpy().dtype
        np.testing.assert_array_equal(back[key], value.numpy())  # bitwise for float32
    fresh = make()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    # And the other direction, starting from Flax params.
    variables = jax.tree.map(np.asarray, gj.torch_to_flax(sd))
    again = gj.torch_to_flax(gj.flax_to_torch(variables))
    flat_a, flat_b = _flat(variables), _flat(again)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key])


def test_conversion_from_flax_init_and_bad_keys():
    j_mod = gj.GridSampler(8, 4, hidden=6, cond_dim=3, geometry="fourier", grid_size=(4, 4))
    x, cond = np.ones((1, 16, 8), np.float32), np.ones((1, 3), np.float32)
    variables = _init(j_mod, x, cond=cond)
    t_mod = GridSampler(8, 4, hidden=6, cond_dim=3, geometry="fourier", grid_size=(4, 4))
    t_mod.load_state_dict({k: torch.from_numpy(v) for k, v in gj.flax_to_torch(variables).items()}, strict=True)
    _close(_apply(j_mod, variables, x, cond=cond).tokens, t_mod(torch.tensor(x), cond=torch.tensor(cond)).tokens)
    with pytest.raises(KeyError, match="unexpected"):
        gj.torch_to_flax({"mlp.0.weight_scale": torch.zeros(2)})
    with pytest.raises(KeyError, match="unexpected"):
        gj.torch_to_flax({"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="missing"):
        gj.torch_to_flax({"mlp.0.weight": torch.zeros(6, 8)}, like=variables)


# -- errors, jit, dtypes -----------------------------------------------------------------------------------


def _message(fn) -> tuple[type, str]:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        return type(e), str(e)
    raise AssertionError("no error raised")


@pytest.mark.parametrize(
    "ctor, call",
    [
        (dict(dim=8, k=0), None),
        (dict(dim=8, k=2.0), None),
        (dict(dim=8, prefix="first"), None),
        (dict(dim=8, coords="learned"), None),
        (dict(dim=8, sampling="bicubic"), None),
        (dict(dim=8, geometry="sine"), None),
        (dict(dim=8, cond_mode="add"), None),
        (dict(dim=8, cond_dim=0), None),
        (dict(dim=8, cond_dim=True), None),  # PyTorch took True as 1 until both shared _checks.check_optional_dim
        (dict(dim=8, grid_size=(4, 0)), None),
        (dict(dim=8, grid_size=4), None),
        (dict(dim=8, num_prefix_tokens=-1), None),
        (dict(dim=8, k=4), dict(shape=(2, 16, 8))),  # no grid_size
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(2, 15, 8))),
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(2, 16, 7))),
        (dict(dim=8, k=4), dict(shape=(2, 8, 4, 4), layout="nhwc")),
        (dict(dim=8, k=4), dict(shape=(2, 8, 4, 4), grid=(2, 8))),
        (dict(dim=8, k=4), dict(shape=(2, 16, 8), layout="sequence", grid=(4, 4))),
        (dict(dim=8, k=4), dict(shape=(2, 16, 8), layout="nchw")),
        (dict(dim=8, k=4), dict(shape=(16, 8), grid=(4, 4))),
        (dict(dim=8, k=17, grid_size=(4, 4)), dict(shape=(2, 16, 8))),
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(0, 16, 8))),
        (dict(dim=8, k=4, num_prefix_tokens=1), dict(shape=(2, 8, 4, 4))),
        (dict(dim=8, k=4, grid_size=(4, 4), cond_dim=3), dict(shape=(2, 16, 8))),
        (dict(dim=8, k=4, grid_size=(4, 4), cond_dim=3), dict(shape=(2, 16, 8), cond=(2, 4))),
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(2, 16, 8), cond=(2, 3))),
        (dict(dim=8, k=4, grid_size=(4, 4), check_finite=True), dict(shape=(2, 16, 8), nan=True)),
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(2, 16, 8), dtype="int32")),
        # look_dim / look and context
        (dict(dim=8, look_dim=0), None),
        (dict(dim=8, look_dim=True), None),
        (dict(dim=8, look_dim=2.0), None),
        (dict(dim=8, look_dim=4, coords="fixed-grid"), None),
        (dict(dim=8, look_dim=4, coords="random"), None),
        (dict(dim=8, context=1), None),
        (dict(dim=8, attention_grad=True), None),  # the pooled head has no attention maps
        (dict(dim=8, predictor="attention", coords="fixed-grid", attention_grad=True), None),
        (dict(dim=8, predictor="attention", attention_grad=1), None),
        (dict(dim=8, context="yes"), None),
        (dict(dim=8, k=4, grid_size=(4, 4)), dict(shape=(2, 16, 8), look=(2, 16, 8))),  # look without look_dim
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8))),  # look_dim without look
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 15, 8))),  # the look error comes first
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look=(2, 16, 4))),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look=(1, 16, 5))),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look=(2, 4, 4, 5))),
        (dict(dim=8, k=4, look_dim=5), dict(shape=(2, 8, 3, 4), look=(2, 16, 5))),  # the grid is x's
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5, num_prefix_tokens=1), dict(shape=(2, 17, 8), look=(2, 17, 5))),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look=(2, 16, 5), look_dtype="int32")),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look="list")),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5, cond_dim=3), dict(shape=(2, 16, 8), look=(2, 15, 5))),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5, cond_dim=3), dict(shape=(2, 16, 8), look=(2, 16, 5))),
        (dict(dim=8, k=4, grid_size=(4, 4), look_dim=5), dict(shape=(2, 16, 8), look=(2, 16, 5), cond=(2, 3))),
    ],
)
def test_errors_match_torch(ctor, call):
    ctor = dict(ctor)
    dim = ctor.pop("dim")
    t_type, t_msg = _message(lambda: _run_torch(dim, ctor, call))
    j_type, j_msg = _message(lambda: _run_jax(dim, ctor, call))
    assert (j_type, j_msg) == (t_type, t_msg.replace("torch.", ""))


def _inputs(call):
    x = np.ones(call["shape"], np.dtype(call.get("dtype", "float32")))
    if call.get("nan"):
        x[0, 0, 0] = np.nan
    cond = np.ones(call["cond"], np.float32) if "cond" in call else None
    look = call.get("look")
    if look == "list":
        look = [[[1.0] * 5] * 16] * 2
    elif look is not None:
        look = np.ones(look, np.dtype(call.get("look_dtype", "float32")))
    return x, cond, look


def _run_torch(dim, ctor, call):
    mod = GridSampler(dim, **ctor)
    if call is not None:
        x, cond, look = _inputs(call)
        cond = None if cond is None else torch.tensor(cond)
        look = torch.tensor(look) if isinstance(look, np.ndarray) else look
        mod(torch.tensor(x), call.get("grid"), cond=cond, layout=call.get("layout"), look=look)


def _run_jax(dim, ctor, call):
    mod = gj.GridSampler(dim, **ctor)
    if call is not None:
        x, cond, look = _inputs(call)
        mod.init(jax.random.key(0), x, call.get("grid"), cond=cond, layout=call.get("layout"), look=look)


def test_input_type_and_jit_only_errors():
    mod = gj.GridSampler(4, 2, grid_size=(2, 2))
    with pytest.raises(TypeError, match="jax.Array or numpy array"):
        mod.init(jax.random.key(0), [[[1.0] * 4] * 4])
    finite = gj.GridSampler(4, 2, grid_size=(2, 2), check_finite=True)
    x = np.ones((1, 4, 4), np.float32)
    variables = finite.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="cannot run inside jax.jit"):
        jax.jit(lambda v, x: finite.apply(v, x))(variables, x)


def test_jit_grad_no_callbacks_and_bfloat16():
    mod = gj.GridSampler(
        8, 4, grid_size=(4, 6), geometry="fourier", cond_dim=2, num_prefix_tokens=1, prefix="keep", context=True
    )
    x = np.random.default_rng(3).standard_normal((2, 25, 8)).astype(np.float32)
    cond = np.ones((2, 2), np.float32)
    variables = _init(mod, x, cond=cond)

    def loss(v, x):
        return mod.apply(v, x, cond=cond).tokens.sum()

    text = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(variables, x))
    assert "callback" not in text
    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(g_params))
    assert g_x.shape == x.shape and np.isfinite(np.asarray(g_x)).all()
    out16 = jax.jit(lambda v, x: mod.apply(v, x, cond=cond))(variables, x.astype(jnp.bfloat16))
    out32 = _apply(mod, variables, x, cond=cond)
    assert out16.tokens.dtype == jnp.bfloat16 and out16.coords.dtype == jnp.float32
    _close(out16.tokens.astype(jnp.float32), out32.tokens, 5e-2)


def test_openpi_standin_example_runs(capsys):
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    runpy.run_path(str(ROOT / "examples" / "jax_openpi_standin.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "3 x 256 + 48 = 816" in out and "3 x 16 + 48 = 96" in out
