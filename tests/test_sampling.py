"""The bilinear sampler: reference equality, coordinate convention, border behaviour, gradients."""

import pytest
import torch
import torch.nn.functional as F

from grids_vla.sampling import (
    bilinear_sample,
    coords_to_image_fraction,
    image_fraction_to_coords,
    patch_centers,
    snap_to_patch_centers,
)


def reference(tokens, grid_size, coords, align_corners):
    """F.grid_sample with border padding: the float64 reference."""
    h, w = grid_size
    b, _, c = tokens.shape
    fmap = tokens.transpose(1, 2).reshape(b, c, h, w)
    grid = (coords * 2 - 1).unsqueeze(1)  # (B, 1, K, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)
    return out.squeeze(2).transpose(1, 2)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", [(16, 16), (7, 12), (1, 5), (6, 1), (2, 2)])
def test_matches_float64_reference(align_corners, grid_size):
    torch.manual_seed(0)
    h, w = grid_size
    tokens = torch.randn(3, h * w, 5, dtype=torch.float64)
    coords = torch.rand(3, 11, 2, dtype=torch.float64)
    coords[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    out = bilinear_sample(tokens, grid_size, coords, align_corners)
    torch.testing.assert_close(out, reference(tokens, grid_size, coords, align_corners), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("grid_size", [(16, 16), (5, 9), (1, 4)])
def test_patch_centre_returns_that_patch(align_corners, grid_size):
    h, w = grid_size
    tokens = torch.randn(2, h * w, 7)
    centres = patch_centers(grid_size, align_corners).unsqueeze(0).expand(2, -1, -1)
    out = bilinear_sample(tokens, grid_size, centres, align_corners)
    assert torch.equal(out, tokens)  # product-form weights are exactly 1 and 0 at a centre


@pytest.mark.parametrize("align_corners", [True, False])
def test_weights_sum_to_one_everywhere(align_corners):
    ones = torch.ones(4, 10 * 13, 3, dtype=torch.float64)
    coords = torch.rand(4, 500, 2, dtype=torch.float64)
    out = bilinear_sample(ones, (10, 13), coords, align_corners)
    torch.testing.assert_close(out, torch.ones_like(out))


def test_linear_map_is_reproduced_between_centres():
    # With align_corners=True the index is u = x * (W - 1); a map linear in the index is sampled exactly.
    h, w = 6, 9
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    tokens = torch.stack([xs.flatten(), ys.flatten()], dim=-1).unsqueeze(0)
    coords = torch.rand(1, 100, 2, dtype=torch.float64)
    out = bilinear_sample(tokens, (h, w), coords, align_corners=True)
    torch.testing.assert_close(out, coords * torch.tensor([w - 1, h - 1], dtype=torch.float64))


@pytest.mark.parametrize("align_corners", [True, False])
def test_no_zero_token_at_the_far_border(align_corners):
    """The reference code returned an all-zero token (and zero gradient) at x or y == 1.0."""
    h, w = 16, 16
    tokens = torch.rand(1, h * w, 4) + 1.0  # strictly positive
    coords = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.5, 1.0]]])
    out = bilinear_sample(tokens, (h, w), coords, align_corners)
    assert (out > 0.5).all()
    torch.testing.assert_close(out[0, 0], tokens[0, -1])  # bottom-right patch
    torch.testing.assert_close(out[0, 1], tokens[0, w - 1])  # top-right patch
    torch.testing.assert_close(out[0, 2], tokens[0, (h - 1) * w])  # bottom-left patch


def test_coordinate_gradient_is_nonzero_at_one_with_align_corners():
    tokens = torch.randn(1, 8 * 8, 3)
    coords = torch.tensor([[[1.0, 1.0]]], requires_grad=True)
    bilinear_sample(tokens, (8, 8), coords, align_corners=True).sum().backward()
    assert coords.grad.abs().sum() > 0


@pytest.mark.parametrize("align_corners", [True, False])
def test_gradcheck_features_and_coords(align_corners):
    torch.manual_seed(1)
    tokens = torch.randn(2, 5 * 6, 3, dtype=torch.float64, requires_grad=True)
    # Keep points off patch-centre lines and (for align_corners=False) out of the clamped border strip,
    # where the function has kinks and finite differences disagree with any one-sided derivative.
    coords = (0.12 + 0.76 * torch.rand(2, 7, 2, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, c: bilinear_sample(t, (5, 6), c, align_corners), (tokens, coords), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("align_corners", [True, False])
def test_snapping_selects_one_patch_with_straight_through_gradient(align_corners):
    torch.manual_seed(2)
    tokens = torch.randn(2, 8 * 10, 4)
    coords = torch.rand(2, 9, 2, requires_grad=True)
    out = bilinear_sample(tokens, (8, 10), coords, align_corners, snap=True)
    # Each output is exactly the nearest input patch (image-space cell containing the point).
    frac = coords_to_image_fraction(coords.detach(), (8, 10), align_corners)
    cell = (frac * torch.tensor([10, 8])).floor().long().clamp(max=torch.tensor([9, 7]))
    index = cell[..., 1] * 10 + cell[..., 0]
    assert torch.equal(out, torch.stack([tokens[b, index[b]] for b in range(2)]))
    out.sum().backward()
    assert coords.grad is not None and coords.grad.abs().sum() > 0
    # The reported snapped coordinates are the centres of the patches read.
    snapped = snap_to_patch_centers(coords.detach(), (8, 10), align_corners)
    torch.testing.assert_close(snapped, patch_centers((8, 10), align_corners)[index])


@pytest.mark.parametrize("align_corners", [True, False])
def test_image_fraction_round_trip(align_corners):
    coords = torch.rand(50, 2, dtype=torch.float64)
    back = image_fraction_to_coords(coords_to_image_fraction(coords, (7, 11), align_corners), (7, 11), align_corners)
    torch.testing.assert_close(back, coords)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtype_preserved_and_close_to_float64(dtype):
    torch.manual_seed(3)
    tokens = torch.randn(2, 16 * 16, 8, dtype=torch.float64)
    coords = torch.rand(2, 16, 2, dtype=torch.float64)
    ref = bilinear_sample(tokens, (16, 16), coords)
    out = bilinear_sample(tokens.to(dtype), (16, 16), coords.float())
    assert out.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 5e-3}[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
