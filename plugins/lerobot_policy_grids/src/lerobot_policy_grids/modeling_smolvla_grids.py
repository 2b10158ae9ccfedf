"""``SmolVLAGridsPolicy``: LeRobot's SmolVLA with GridS after the vision encoder + connector.

SmolVLA hands its SmolVLM text model 64 tokens x 960 per 512 px camera (an 8 x 8 grid after pixel shuffle).
Here ``VLAFlowMatching.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`), so the
prefix carries ``grids_k`` tokens per camera and every mask is built from that length by SmolVLA itself.
"""

from __future__ import annotations

from typing import Any

from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

from .common import GridSPolicyMixin, as_grids_config, build_grids
from .configuration_smolvla_grids import SmolVLAGridsConfig
from .vlm import present_then_absent, wrap_embed_image


class SmolVLAGridsPolicy(GridSPolicyMixin, SmolVLAPolicy):
    """SmolVLA + GridS. Accepts a :class:`SmolVLAGridsConfig` (or a plain SmolVLA config, converted with a warning)."""

    config_class = SmolVLAGridsConfig
    name = "smolvla_grids"

    def __init__(self, config: SmolVLAGridsConfig | Any = None, **kwargs: Any) -> None:
        config = as_grids_config(config, SmolVLAGridsConfig)
        super().__init__(config, **kwargs)
        vlm = self.model.vlm_with_expert
        self._grids_cameras = list(self.config.image_features)
        dim = int(vlm.config.text_config.hidden_size)
        grid = self._dense_grid(vlm.config)
        self.grids = build_grids(self.config, dim, self._grids_cameras, grid, cond_dim=dim)
        self._grids_call_cameras: list[str] = list(self._grids_cameras)
        wrap_embed_image(
            self,
            self.model,
            vlm,
            cameras=lambda: self._grids_call_cameras,
            grid_size=grid,
            language=self.config.grids_conditioning == "language",
        )

    def _dense_grid(self, vlm_config: Any) -> tuple[int, int] | None:
        """The dense token grid of one camera: resized image / patch size / pixel-shuffle factor, if exact."""
        size = self.config.resize_imgs_with_padding
        if size is None:
            return None
        step = int(vlm_config.vision_config.patch_size) * int(vlm_config.scale_factor)
        if size[0] % step or size[1] % step:
            return None
        return size[0] // step, size[1] // step

    def prepare_images(self, batch: dict[str, Any]) -> Any:
        """SmolVLA's image preparation, recording which camera each returned image is (present ones come first)."""
        images, masks = super().prepare_images(batch)
        self._grids_call_cameras = present_then_absent(list(self.config.image_features), batch, len(images))
        return images, masks
