"""``SmolVLAGridsPolicy``: LeRobot's SmolVLA with GridS after the vision encoder + connector, or inside the encoder.

SmolVLA hands its SmolVLM text model 64 tokens x 960 per 512 px camera (an 8 x 8 grid after pixel shuffle).
Here ``SmolVLMWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`), so the
prefix carries ``grids_k`` tokens per camera and every mask is built from that length by SmolVLA itself.

``grids_after_layer=L`` resamples the 32 x 32 x 768 patch map entering SigLIP layer ``L`` instead: each of the
``grids_k`` points takes a ``4 x 4`` neighbourhood (the connector's ``scale_factor``), the remaining layers run on
``16 * grids_k`` tokens, and the unchanged connector shuffles each neighbourhood into one token
(:mod:`lerobot_policy_grids.encoder`).
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
        encoder = None
        if self.config.grids_after_layer is None:
            grid = self._dense_grid(vlm.config)
            self.grids = build_grids(self.config, dim, self._grids_cameras, grid, cond_dim=dim)
        else:
            encoder = self._install_encoder_grids(vlm, text_dim=dim)
            grid = None
        self._grids_call_cameras: list[str] = list(self._grids_cameras)
        wrap_embed_image(
            self,
            self.model,
            vlm,
            cameras=lambda: self._grids_call_cameras,
            grid_size=grid,
            language=self.config.grids_conditioning == "language",
            encoder=encoder,
        )

    def _install_encoder_grids(self, vlm: Any, text_dim: int) -> Any:
        """``grids_after_layer=L``: a sampler at SigLIP's width on the patch grid, hooked into the tower."""
        from .encoder import install_encoder_grids

        vision = vlm.config.vision_config
        patch = int(vision.patch_size)
        size = self.config.resize_imgs_with_padding or (int(vision.image_size), int(vision.image_size))
        anchor = (int(size[0]) // patch, int(size[1]) // patch)
        self.grids = build_grids(self.config, int(vision.hidden_size), self._grids_cameras, anchor, cond_dim=text_dim)
        model = vlm.get_vlm_model()
        tower = model.vision_model
        return install_encoder_grids(
            self, tower, tower.encoder.layers, policy_type=self.name, after_layer=self.config.grids_after_layer,
            anchor_grid=anchor, fixed_grid=None, patch_size=(patch, patch), connector=model.connector,
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
