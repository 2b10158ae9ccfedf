"""``PI05GridsPolicy``: LeRobot's PI0.5 with GridS after SigLIP + projector (256 -> ``grids_k`` tokens per camera).

``PaliGemmaWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`);
``embed_prefix`` builds its masks from the returned length. Verified with lerobot 0.6.x on Python 3.12
(``tests_py312``, tiny random PaliGemma).
"""

from __future__ import annotations

from typing import Any

from lerobot.policies.pi05.modeling_pi05 import PI05Policy

from .common import GridSPolicyMixin, as_grids_config
from .configuration_pi05_grids import PI05GridsConfig
from .modeling_pi0_grids import PIGridsLoadingMixin, keep_image_embedding_outside_checkpoint, require_working_pi
from .vlm import install_paligemma_grids, present_then_absent


class PI05GridsPolicy(PIGridsLoadingMixin, GridSPolicyMixin, PI05Policy):
    """PI0.5 + GridS. Accepts a :class:`PI05GridsConfig` (or a plain PI0.5 config, converted with a warning)."""

    config_class = PI05GridsConfig
    name = "pi05_grids"

    def __init__(self, config: PI05GridsConfig | Any = None, **kwargs: Any) -> None:
        require_working_pi(self.name)
        config = as_grids_config(config, PI05GridsConfig)
        super().__init__(config, **kwargs)
        self._grids_call_cameras: list[str] = list(self.config.image_features)
        install_paligemma_grids(self, lambda: self._grids_call_cameras)
        keep_image_embedding_outside_checkpoint(self.model)

    def _preprocess_images(self, batch: dict[str, Any]) -> Any:
        """PI0.5's image preparation, recording which camera each returned image is."""
        images, masks = super()._preprocess_images(batch)
        self._grids_call_cameras = present_then_absent(list(self.config.image_features), batch, len(images))
        return images, masks
