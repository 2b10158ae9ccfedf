"""GridSampler: layouts, initialisation, modes, conditioning, dtypes, compile, errors, save/load."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grids_vla import GridSampler, MultiCameraGridS, spread_anchors
from grids_vla.sampling import bilinear_sample, patch_centers


def perturb_(module, std=0.5, seed=0):
    """Give every parameter random values so behaviour no longer reflects the zero initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * std)
    return module


def test_layouts_agree_and_shapes():
    torch.manual_seed(0)
    g = perturb_(GridSampler(8, 5, grid_size=(6, 10)))
    fmap = torch.randn(3, 8, 6, 10)
    a = g(fmap)
    b = g(fmap.permute(0, 2, 3, 1), layout="nhwc")
    c = g(fmap.flatten(2).transpose(1, 2))
    for out in (a, b, c):
        assert out.tokens.shape == (3, 5, 8) and out.coords.shape == (3, 5, 2)
        torch.testing.assert_close(out.tokens, a.tokens)
    assert ((a.coords >= 0) & (a.coords <= 1)).all()


@pytest.mark.parametrize("prefix", ["drop", "keep"])
def test_prefix_tokens(prefix):
    g = GridSampler(4, 3, grid_size=(4, 4), num_prefix_tokens=2, prefix=prefix)
    x = torch.randn(2, 2 + 16, 4)
    out = g(x)
    if prefix == "keep":
        assert out.tokens.shape == (2, 5, 4)
        assert torch.equal(out.tokens[:, :2], x[:, :2])
    else:
        assert out.tokens.shape == (2, 3, 4)
    assert g.num_output_tokens() == out.tokens.shape[1]
    plain = GridSampler(4, 3, grid_size=(4, 4))
    plain.load_state_dict(g.state_dict())
    torch.testing.assert_close(out.tokens[:, -3:], plain(x[:, 2:]).tokens)


@pytest.mark.parametrize("k,grid", [(1, (16, 16)), (16, (16, 16)), (4, (16, 16)), (8, (6, 24)), (7, (5, 5))])
def test_initial_points_are_the_spread_anchors(k, grid):
    g = GridSampler(6, k, grid_size=grid)
    out = g(torch.randn(4, 6, *grid))
    anchors = g.anchor_coords(grid)
    for b in range(4):
        torch.testing.assert_close(out.coords[b], anchors, atol=1e-5, rtol=0)
    assert out.aux["saturated"] == 0
    # Spread: K distinct points, at least one cell apart in image space.
    frac = spread_anchors(k, grid)
    assert frac.shape == (k, 2) and ((frac > 0) & (frac < 1)).all()
    if k > 1:
        d = torch.cdist(frac, frac) + torch.eye(k)
        assert d.min() > 1 / (2 * max(k, 4))


def test_anchors_for_k_equal_to_grid_are_patch_centres():
    for align in (True, False):
        g = GridSampler(3, 12, coords="fixed-grid", geometry=False, align_corners=align)
        x = torch.randn(2, 3, 3, 4)
        out = g(x)
        torch.testing.assert_close(out.coords[0], patch_centers((3, 4), align))
        torch.testing.assert_close(out.tokens, x.flatten(2).transpose(1, 2))  # fixed grid at K = H*W is dense


def test_attention_predictor_starts_near_the_anchors_and_stays_inside():
    g = GridSampler(8, 16, grid_size=(16, 16), predictor="attention", cond_dim=3)
    x, cond = torch.randn(2, 256, 8), torch.randn(2, 3)
    out = g(x, cond=cond)
    torch.testing.assert_close(out.coords[0], g.anchor_coords((16, 16)), atol=0.05, rtol=0)
    torch.testing.assert_close(out.aux["attention"].sum(-1), torch.ones(2, 16))
    perturb_(g, std=50.0)  # huge scores: a soft-argmax still lands inside the grid, never on a tail
    out = g(x, cond=cond)
    assert ((out.coords >= 0) & (out.coords <= 1)).all() and torch.isfinite(out.tokens).all()


def test_attention_predictor_learns_to_move_a_point_onto_a_marked_patch():
    """The coordinate gradient reaches every token's score, so one point can travel to a distant target."""
    torch.manual_seed(0)
    g = GridSampler(4, 1, grid_size=(8, 8), predictor="attention", geometry=False)
    opt = torch.optim.Adam(g.parameters(), lr=0.05)
    x = torch.zeros(16, 64, 4)
    target = torch.randint(0, 64, (16,))
    x[torch.arange(16), target, 0] = 1.0  # one marked patch per image, anywhere
    goal = patch_centers((8, 8), True)[target]
    for _ in range(150):
        loss = (g(x).coords[:, 0] - goal).abs().sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # starts at ~0.5 (the centre)


def test_anchors_without_a_grid_size_stay_spread():
    g = GridSampler(8, 16)  # grid unknown at construction: image-fraction anchors
    coords = g(torch.randn(1, 8, 16, 16)).coords[0]
    assert torch.cdist(coords, coords).add(torch.eye(16)).min() > 0.2


def test_full_coordinate_gradient_at_the_far_border():
    tokens = torch.arange(16.0).view(1, 16, 1)  # value = index, a ramp of slope 1 per patch along x
    for x in (0.0, 1.0):
        coords = torch.tensor([[[x, 0.0]]], requires_grad=True)
        bilinear_sample(tokens, (4, 4), coords).sum().backward()
        assert coords.grad[0, 0, 0].item() == pytest.approx(3.0)  # (W - 1) patches per unit of x


def test_saturation_is_reported():
    g = GridSampler(4, 4, grid_size=(8, 8))
    with torch.no_grad():
        g.mlp[2].bias.fill_(20.0)  # every logit far in the sigmoid's flat tail
    out = g(torch.randn(2, 4, 8, 8))
    assert out.aux["saturated"] == 1.0
    assert torch.isfinite(out.tokens).all() and (out.tokens.abs().sum(-1) > 0).all()  # no zero tokens at 1.0


def test_gradients_reach_features_and_predictor():
    torch.manual_seed(0)
    g = perturb_(GridSampler(8, 4, grid_size=(5, 7)), std=0.1)
    x = torch.randn(2, 8, 5, 7, requires_grad=True)
    out = g(x)
    (out.tokens.square().sum() + out.coords.sum()).backward()
    assert x.grad.abs().sum() > 0
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_initialised_geometry_starts_as_plain_resampling():
    torch.manual_seed(0)
    x = torch.randn(2, 35, 8)
    for mode in ("mlp", "fourier"):
        g = GridSampler(8, 4, grid_size=(5, 7), geometry=mode)
        out = g(x)
        torch.testing.assert_close(out.tokens, bilinear_sample(x, (5, 7), out.coords))
        perturb_(g.geometry)
        assert not torch.allclose(g(x).tokens, out.tokens)
    off = GridSampler(8, 4, grid_size=(5, 7), geometry=False)
    assert off.geometry is None


def test_random_mode_is_random_and_seeded():
    g = GridSampler(4, 6, coords="random", grid_size=(8, 8))
    x = torch.randn(2, 64, 4)
    torch.manual_seed(5)
    a = g(x).coords
    b = g(x).coords
    torch.manual_seed(5)
    c = g(x).coords
    assert not torch.equal(a, b) and torch.equal(a, c)
    assert not hasattr(g, "mlp")


def test_nearest_mode_returns_exact_patches():
    torch.manual_seed(0)
    g = perturb_(GridSampler(4, 6, sampling="nearest", geometry=False, grid_size=(8, 8)), std=1.0)
    x = torch.randn(3, 64, 4)
    out = g(x)
    centres = patch_centers((8, 8), True)
    for b in range(3):
        idx = torch.cdist(out.coords[b], centres).argmin(-1)
        assert torch.equal(out.tokens[b], x[b, idx])


@pytest.mark.parametrize("cond_mode", ["film", "concat"])
def test_conditioning_changes_where_it_looks(cond_mode):
    torch.manual_seed(0)
    g = perturb_(GridSampler(8, 4, grid_size=(6, 6), cond_dim=3, cond_mode=cond_mode))
    x = torch.randn(1, 36, 8).expand(2, -1, -1)
    cond = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    out = g(x, cond=cond)
    assert not torch.allclose(out.coords[0], out.coords[1])
    with pytest.raises(ValueError, match="cond_dim=3"):
        g(x)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        g(x, cond=torch.randn(2, 4))


def test_unconditioned_sampler_rejects_cond():
    with pytest.raises(ValueError, match="takes no cond"):
        GridSampler(4, 2, grid_size=(3, 3))(torch.randn(1, 9, 4), cond=torch.randn(1, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("module_dtype", ["same", "float32"])
def test_dtypes(dtype, module_dtype):
    torch.manual_seed(0)
    g = perturb_(GridSampler(16, 4, grid_size=(8, 8), cond_dim=2), std=0.1)
    x = torch.randn(2, 64, 16)
    cond = torch.randn(2, 2)
    ref = g(x, cond=cond)
    if module_dtype == "same":
        g = g.to(dtype)
    out = g(x.to(dtype), cond=cond.to(dtype))
    assert out.tokens.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(out.tokens.float(), ref.tokens, rtol=tol, atol=tol)
    torch.testing.assert_close(out.coords.float(), ref.coords, rtol=tol, atol=tol / 5)


def test_batch_of_one_and_determinism():
    torch.manual_seed(7)
    a = GridSampler(8, 4, grid_size=(4, 4))
    torch.manual_seed(7)
    b = GridSampler(8, 4, grid_size=(4, 4))
    x = torch.randn(1, 16, 8)
    assert torch.equal(a(x).tokens, b(x).tokens)
    assert a(x).tokens.shape == (1, 4, 8)


def test_oversampling_needs_permission():
    x = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match="k=5 exceeds the H\\*W=4"):
        GridSampler(3, 5, grid_size=(2, 2))(x)
    assert GridSampler(3, 5, grid_size=(2, 2), allow_oversample=True)(x).tokens.shape == (1, 5, 3)


@pytest.mark.parametrize(
    "make,call,error,match",
    [
        (lambda: GridSampler(4, 0), None, ValueError, "k must be >= 1, got 0"),
        (lambda: GridSampler(4, 2.5), None, TypeError, "k must be an int"),
        (lambda: GridSampler(4, 2, coords="learned"), None, ValueError, "coords must be one of"),
        (lambda: GridSampler(4, 2, sampling="cubic"), None, ValueError, "sampling must be one of"),
        (lambda: GridSampler(4, 2, prefix="pass"), None, ValueError, "prefix must be"),
        (lambda: GridSampler(4, 2, grid_size=(0, 3)), None, ValueError, "grid_size must be two positive ints"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3)), lambda g: g(torch.randn(9, 4)), ValueError, "must be 4-D"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3)), lambda g: g(torch.randn(1, 9, 5)), ValueError,
         "C=5 channels but the reducer was built with dim=4"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3)), lambda g: g(torch.randn(1, 10, 4)), ValueError,
         "N=10 tokens but num_prefix_tokens \\+ H\\*W"),
        (lambda: GridSampler(4, 2), lambda g: g(torch.randn(1, 9, 4)), ValueError, "grid_size=\\(H, W\\) is required"),
        (lambda: GridSampler(4, 2), lambda g: g(torch.randn(1, 3, 3, 4)), ValueError, "layout='nhwc'"),
        (lambda: GridSampler(4, 2), lambda g: g(torch.ones(1, 4, 3, 3, dtype=torch.long)), TypeError,
         "floating-point.*torch.int64"),
        (lambda: GridSampler(4, 2, check_finite=True), lambda g: g(torch.full((1, 4, 3, 3), float("nan"))),
         ValueError, "NaN or inf"),
        (lambda: GridSampler(4, 2), lambda g: g(torch.randn(1, 4, 3, 3), grid_size=(9, 1)), ValueError,
         "disagrees with the feature map"),
        (lambda: GridSampler(4, 2), lambda g: g(torch.randn(1, 4, 3, 3), layout="chw"), ValueError, "layout must be"),
        (lambda: GridSampler(4, 2, num_prefix_tokens=1), lambda g: g(torch.randn(1, 4, 3, 3)), ValueError,
         "feature map has no prefix tokens"),
        (lambda: GridSampler(4, 2), lambda g: g([1.0]), TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_input_errors(make, call, error, match):
    with pytest.raises(error, match=match):
        g = make()
        assert call is not None, "the constructor should have raised"
        call(g)


def test_nan_passes_without_the_opt_in_check():
    out = GridSampler(4, 2)(torch.full((1, 4, 3, 3), float("nan")))
    assert torch.isnan(out.tokens).all()


@pytest.mark.parametrize("predictor", ["pooled", "attention"])
def test_torch_compile_matches_eager(predictor):
    torch.manual_seed(0)
    g = perturb_(GridSampler(16, 8, grid_size=(8, 8), cond_dim=4, predictor=predictor), std=0.1)
    x, cond = torch.randn(2, 64, 16), torch.randn(2, 4)
    eager = g(x, cond=cond)
    compiled = torch.compile(g, fullgraph=True)(x, cond=cond)
    torch.testing.assert_close(compiled.tokens, eager.tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compiled.coords, eager.coords, rtol=1e-5, atol=1e-6)


def test_safetensors_round_trip_is_strict(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    g = perturb_(GridSampler(8, 4, grid_size=(4, 4), cond_dim=2, geometry="fourier"))
    save_file(g.state_dict(), tmp_path / "g.safetensors")
    h = GridSampler(8, 4, grid_size=(4, 4), cond_dim=2, geometry="fourier")
    h.load_state_dict(load_file(tmp_path / "g.safetensors"), strict=True)
    x, cond = torch.randn(2, 16, 8), torch.randn(2, 2)
    assert torch.equal(g(x, cond=cond).tokens, h(x, cond=cond).tokens)
    with pytest.raises(RuntimeError, match="size mismatch"):
        GridSampler(8, 5, grid_size=(4, 4), cond_dim=2, geometry="fourier").load_state_dict(g.state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        GridSampler(8, 4, grid_size=(4, 4), cond_dim=2, geometry=False).load_state_dict(g.state_dict())


@pytest.mark.parametrize("coords", ["random", "fixed-grid"])
def test_shared_multi_camera_with_unlearned_points(coords):
    m = MultiCameraGridS(["a", "b"], 4, 2, shared=True, coords=coords, grid_size=(3, 3))
    out = m({"a": torch.randn(1, 9, 4), "b": torch.randn(1, 9, 4)})
    assert out["b"].tokens.shape == (1, 2, 4)


@pytest.mark.parametrize("shared", [True, False])
def test_multi_camera(shared):
    torch.manual_seed(0)
    m = MultiCameraGridS(["agentview", "wrist"], 8, 4, shared=shared, grid_size=(4, 4))
    perturb_(m)
    x = torch.randn(1, 16, 8).expand(2, -1, -1)
    out = m({"agentview": x, "wrist": x})
    assert set(out) == {"agentview", "wrist"}
    assert out["agentview"].tokens.shape == (2, 4, 8)
    # Same image, different camera: camera identity (shared) or separate weights must change the points.
    assert not torch.allclose(out["agentview"].coords, out["wrist"].coords)
    with pytest.raises(KeyError, match="missing \\['wrist'\\]"):
        m({"agentview": x})
    with pytest.raises(KeyError, match="unknown \\['top'\\]"):
        m({"agentview": x, "wrist": x, "top": x})



@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("cond_dim", [None, 3])
@pytest.mark.parametrize("coords", ["predicted", "fixed-grid"])
def test_forward_camera_is_forward_for_one_camera(shared, cond_dim, coords):
    m = perturb_(MultiCameraGridS(["agentview", "wrist"], 8, 4, shared=shared, cond_dim=cond_dim, coords=coords))
    inputs = {"agentview": torch.randn(2, 8, 4, 4), "wrist": torch.randn(2, 8, 4, 4)}
    cond = None if cond_dim is None or coords != "predicted" else torch.randn(2, cond_dim)
    out = m(inputs, cond=cond)
    for cam, x in inputs.items():
        one = m.forward_camera(cam, x, cond=cond)
        assert torch.equal(one.tokens, out[cam].tokens) and torch.equal(one.coords, out[cam].coords)
    if coords == "predicted":  # the camera identity (shared) or the camera's own sampler is used
        assert not torch.equal(m.forward_camera("agentview", inputs["wrist"], cond=cond).coords, out["wrist"].coords)
    with pytest.raises(KeyError, match=r"camera must be one of \['agentview', 'wrist'\], got 'top'"):
        m.forward_camera("top", inputs["wrist"], cond=cond)

@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 12),
    b=st.integers(1, 3),
    mode=st.sampled_from(["predicted", "random", "fixed-grid"]),
    sampling=st.sampled_from(["bilinear", "nearest"]),
    align=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
    predictor=st.sampled_from(["pooled", "attention"]),
)
def test_property_shapes_and_ranges(h, w, k, b, mode, sampling, align, dtype, predictor):
    k = min(k, h * w)
    g = GridSampler(6, k, coords=mode, sampling=sampling, align_corners=align, grid_size=(h, w), predictor=predictor)
    g = g.to(dtype)
    x = torch.randn(b, h * w, 6, dtype=dtype)
    out = g(x)
    assert out.tokens.shape == (b, k, 6) and out.tokens.dtype == dtype
    assert out.coords.shape == (b, k, 2)
    assert ((out.coords >= 0) & (out.coords <= 1)).all()
    assert torch.isfinite(out.tokens).all()


def test_attention_grad_changes_only_the_backward_pass():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, requires_grad=True)
    plain = GridSampler(8, 4, predictor="attention", grid_size=(8, 8))
    routed = GridSampler(8, 4, predictor="attention", attention_grad=True, grid_size=(8, 8))
    with torch.no_grad():
        plain.point_attn.queries.normal_()
    routed.load_state_dict(plain.state_dict())
    a, b = plain(x), routed(x)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.coords, b.coords)  # the forward value, to the bit
    ga = torch.autograd.grad(a.tokens.square().sum(), plain.point_attn.queries)[0]
    gb = torch.autograd.grad(b.tokens.square().sum(), routed.point_attn.queries, retain_graph=True)[0]
    # the extra term: d tokens / d attention = the features, times d attention / d queries
    attn = b.aux["attention"]
    extra = torch.autograd.grad((attn @ x.detach()), routed.point_attn.queries, grad_outputs=2 * b.tokens.detach())[0]
    torch.testing.assert_close(gb, ga + extra)
    with pytest.raises(ValueError, match="attention_grad needs predictor='attention'"):
        GridSampler(8, 4, attention_grad=True)


def test_context_adds_the_frames_mean_token_and_starts_at_zero():
    """``context=True`` adds one learned vector per frame, a function of its mean token, to every sampled token;
    zero-initialised, so the first forward is the plain sampler's, and it gets gradient from the first step."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8)
    plain = GridSampler(8, 4, coords="fixed-grid", grid_size=(8, 8))
    ctx = GridSampler(8, 4, coords="fixed-grid", context=True, grid_size=(8, 8))
    ctx.load_state_dict(plain.state_dict(), strict=False)
    assert torch.equal(plain(x).tokens, ctx(x).tokens)
    grad = torch.autograd.grad(ctx(x).tokens.sum(), ctx.context[1].weight)[0]
    assert grad.abs().sum() > 0
    with torch.no_grad():
        ctx.context[1].weight.normal_()
    added = ctx(x).tokens - plain(x).tokens
    torch.testing.assert_close(added, added[:, :1].expand_as(added))  # the same vector for every point of a frame
    assert not torch.allclose(added[0], added[1])  # frames with other content get another
    shuffled = x[:, torch.randperm(64)]  # the mean ignores where things are
    torch.testing.assert_close(ctx(shuffled).tokens - plain(shuffled).tokens, added)
    assert "context=True" in repr(ctx)
    with pytest.raises(ValueError, match="context must be True or False, got 'yes'"):
        GridSampler(8, 4, context="yes")


@pytest.mark.parametrize("predictor", ["pooled", "attention"])
def test_look_features_place_the_points_and_the_tokens_are_sampled_from_x(predictor):
    """With ``look_dim`` the points depend only on ``look``; the output tokens are ``x`` sampled at those points."""
    g = perturb_(GridSampler(8, 4, grid_size=(6, 6), predictor=predictor, look_dim=3, geometry=False))
    x, look = torch.randn(2, 36, 8), torch.randn(2, 36, 3)
    out = g(x, look=look)
    assert out.tokens.shape == (2, 4, 8)
    torch.testing.assert_close(out.tokens, bilinear_sample(x, (6, 6), out.coords, True))
    torch.testing.assert_close(g(torch.randn(2, 36, 8), look=look).coords, out.coords)  # x does not move them
    assert not torch.allclose(g(x, look=torch.randn(2, 36, 3)).coords, out.coords)  # look does
    out.tokens.sum().backward()
    assert all(p.grad is not None for p in g.coordinate_head_parameters() if p.requires_grad)


def test_multi_camera_passes_each_cameras_look():
    m = perturb_(MultiCameraGridS(["a", "b"], 8, 4, grid_size=(6, 6), predictor="attention", look_dim=3))
    x, look = {"a": torch.randn(2, 36, 8), "b": torch.randn(2, 36, 8)}, {"a": torch.randn(2, 36, 3)}
    look["b"] = look["a"].clone()
    out = m(x, look=look)
    for cam in "ab":
        torch.testing.assert_close(out[cam].coords, m.forward_camera(cam, x[cam], look=look[cam]).coords)
    assert not torch.allclose(out["a"].coords, out["b"].coords)  # the camera embedding still tells them apart
    with pytest.raises(KeyError, match="look: cameras expected"):
        m(x, look={"a": look["a"]})


@pytest.mark.parametrize(
    "make,call,match",
    [
        (lambda: GridSampler(4, 2, look_dim=0), None, "look_dim must be a positive int or None, got 0"),
        (lambda: GridSampler(4, 2, look_dim=3, coords="fixed-grid"), None, "coords='fixed-grid' predicts none"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3), look_dim=3), lambda g: g(torch.randn(1, 9, 4)),
         "built with look_dim=3; pass look=\\(B, H\\*W, 3\\)"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3)), lambda g: g(torch.randn(1, 9, 4), look=torch.randn(1, 9, 3)),
         "look was given, but this GridSampler was built without look_dim"),
        (lambda: GridSampler(4, 2, grid_size=(3, 3), look_dim=3),
         lambda g: g(torch.randn(1, 9, 4), look=torch.randn(1, 8, 3)),
         "look must be a floating-point tensor of shape \\(B, H\\*W, look_dim\\)=\\(1, 9, 3\\), got \\(1, 8, 3\\)"),
    ],
)
def test_look_errors(make, call, match):
    with pytest.raises(ValueError, match=match):
        g = make()
        assert call is not None, "the constructor should have raised"
        call(g)
