"""One-line adapters that put GridS inside other libraries' vision models, in the style of ``tome.patch``.

* ``grids_vla.patch.transformers(model, k=16, after_layer=None, prefix="drop", **grids_kwargs)``: Hugging Face
  SigLIP, CLIP and DINOv2 vision towers (:mod:`grids_vla.patch.hf_transformers`).
* ``grids_vla.patch.unpatch(model)``: remove the hooks and the ``grids`` submodule again.
* ``grids_vla.patch.get_adapter(model)``: the registered adapter (``.sampler``, ``.last_output``).
* ``grids_vla.patch.load_grids(model, folder)``: after ``from_pretrained`` + patch, load the saved GridS weights.

timm is not covered: timm imports torchvision, which cannot be installed beside the supported CPU torch
build without replacing torch (see docs/integrations.md).
"""

from ._common import get_adapter, load_grids, unpatch
from .hf_transformers import patch_transformers as transformers

__all__ = ["transformers", "unpatch", "get_adapter", "load_grids"]
