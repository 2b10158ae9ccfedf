"""FLOPs and latency of real VLA architectures with dense visual tokens or GridS at any K.

See :mod:`grids_vla.flops.counter` for what is counted and the ``full`` / ``paper`` accountings,
:mod:`grids_vla.flops.arch` for the five architectures, :mod:`grids_vla.flops.latency` for timing.
Needs the optional ``transformers`` dependency (``pip install grids-vla[flops]``).
"""

from .arch import MODELS, DecoderSpec, ViTSpec, VLAConfig, VLAModules, get_config
from .counter import (
    COMPONENTS,
    FlopBreakdown,
    bound_flops,
    count_flops,
    flops_table,
    format_table,
    model_flops,
)

__all__ = [
    "COMPONENTS",
    "MODELS",
    "DecoderSpec",
    "FlopBreakdown",
    "VLAConfig",
    "VLAModules",
    "ViTSpec",
    "bound_flops",
    "count_flops",
    "flops_table",
    "format_table",
    "get_config",
    "model_flops",
]
