"""GridS in JAX / Flax (``pip install grids-vla[jax]``), numerically matching the PyTorch module.

    from grids_vla.jax import GridSampler, torch_to_flax
    grids = GridSampler(dim=2048, k=16, grid_size=(16, 16))
    variables = grids.init(jax.random.key(0), siglip_tokens)       # or torch_to_flax(torch_module.state_dict())
    tokens, coords, aux = grids.apply(variables, siglip_tokens)    # (B, 256, 2048) -> (B, 16, 2048)

Importing this subpackage needs jax and flax; ``import grids_vla`` alone never imports them.
"""

from .convert import flax_to_torch, torch_to_flax
from .grids import GeometryEmbedding, GridSampler, MultiCameraGridS, ReducerOutput, anchor_coords, spread_anchors
from .sampling import (
    bilinear_sample,
    coords_to_image_fraction,
    coords_to_index_space,
    image_fraction_to_coords,
    patch_centers,
    snap_to_patch_centers,
)

__all__ = [
    "GeometryEmbedding",
    "GridSampler",
    "MultiCameraGridS",
    "ReducerOutput",
    "anchor_coords",
    "bilinear_sample",
    "coords_to_image_fraction",
    "coords_to_index_space",
    "flax_to_torch",
    "image_fraction_to_coords",
    "patch_centers",
    "snap_to_patch_centers",
    "spread_anchors",
    "torch_to_flax",
]
