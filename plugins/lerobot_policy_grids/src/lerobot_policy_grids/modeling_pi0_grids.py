"""``PI0GridsPolicy``: LeRobot's PI0 with GridS after SigLIP + projector (256 -> ``grids_k`` tokens per camera).

``PaliGemmaWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`);
``embed_prefix`` builds its masks from the returned length. Not verified in this environment (see README).
"""

from __future__ import annotations

from typing import Any

from lerobot.policies.pi0.modeling_pi0 import PI0Policy

from .common import GridSPolicyMixin, as_grids_config
from .configuration_pi0_grids import PI0GridsConfig
from .vlm import install_paligemma_grids, present_then_absent


class PI0GridsPolicy(GridSPolicyMixin, PI0Policy):
    """PI0 + GridS. Accepts a :class:`PI0GridsConfig` (or a plain PI0 config, converted with a warning)."""

    config_class = PI0GridsConfig
    name = "pi0_grids"

    def __init__(self, config: PI0GridsConfig | Any = None, **kwargs: Any) -> None:
        config = as_grids_config(config, PI0GridsConfig)
        super().__init__(config, **kwargs)
        self._grids_call_cameras: list[str] = list(self.config.image_features)
        install_paligemma_grids(self, lambda: self._grids_call_cameras)

    def _preprocess_images(self, batch: dict[str, Any]) -> Any:
        """PI0's image preparation, recording which camera each returned image is."""
        images, masks = super()._preprocess_images(batch)
        self._grids_call_cameras = present_then_absent(list(self.config.image_features), batch, len(images))
        return images, masks
