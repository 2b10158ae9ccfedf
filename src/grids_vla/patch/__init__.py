"""One-line adapters that put GridS inside other libraries' vision models, in the style of ``tome.patch``.

* ``grids_vla.patch.transformers(model, k=16, after_layer=None, prefix="drop", **grids_kwargs)``: Hugging Face
  SigLIP, CLIP and DINOv2 vision towers (:mod:`grids_vla.patch.hf_transformers`).
* ``grids_vla.patch.timm(model, k=16, after_layer=None, prefix="drop", **grids_kwargs)``: timm Vision Transformers,
  ``forward_features`` then returns K tokens per image (module ``grids_vla.patch.timm``; the name is the function
  here, as in ToMe, so reach the module through ``importlib.import_module``). timm is never imported by the
  adapter; installing it beside the CPU torch build needs ``scripts/test_timm.sh``'s recipe (docs/integrations.md).
* ``grids_vla.patch.unpatch(model)``: remove the hooks and the ``grids`` submodule again.
* ``grids_vla.patch.get_adapter(model)``: the registered adapter (``.sampler``, ``.last_output``).
* ``grids_vla.patch.load_grids(model, folder)``: after ``from_pretrained`` + patch, load the saved GridS weights.
"""

from ._common import get_adapter, load_grids, unpatch
from .hf_transformers import patch_transformers as transformers
from .timm import patch_timm as timm

__all__ = ["transformers", "timm", "unpatch", "get_adapter", "load_grids"]
