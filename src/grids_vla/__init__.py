"""GridS: differentiable grid-sample pruning of visual tokens for VLA policies.

    from grids_vla import GridSampler
    grids = GridSampler(dim=1152, k=16, grid_size=(16, 16))
    tokens, coords, aux = grids(siglip_tokens)   # (B, 256, 1152) -> (B, 16, 1152), (B, 16, 2)
"""

from .grids import GridSampler, MultiCameraGridS, spread_anchors
from .reducers import (
    FastVPruner,
    ReducerOutput,
    TokenReducer,
    create_reducer,
    list_reducers,
    register_reducer,
)
from .sampling import bilinear_sample, coords_to_image_fraction, patch_centers

__version__ = "0.1.0"

__all__ = [
    "FastVPruner",
    "GridSampler",
    "MultiCameraGridS",
    "ReducerOutput",
    "TokenReducer",
    "bilinear_sample",
    "coords_to_image_fraction",
    "create_reducer",
    "list_reducers",
    "patch_centers",
    "register_reducer",
    "spread_anchors",
]
