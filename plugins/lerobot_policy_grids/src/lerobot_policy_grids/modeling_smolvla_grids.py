"""``SmolVLAGridsPolicy``: LeRobot's SmolVLA with GridS after the vision encoder + connector, or inside the encoder.

SmolVLA hands its SmolVLM text model 64 tokens x 960 per 512 px camera (an 8 x 8 grid after pixel shuffle).
Here ``SmolVLMWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`), so the
prefix carries ``grids_k`` tokens per camera and every mask is built from that length by SmolVLA itself.

``grids_after_layer=L`` resamples the 32 x 32 x 768 patch map entering SigLIP layer ``L`` instead, and
``grids_connector`` says how the ``grids_k`` points then meet the unchanged 4 x 4 pixel-shuffle connector
(:mod:`lerobot_policy_grids.encoder`):

* ``"neighbourhood"`` (default): each point takes a ``4 x 4`` neighbourhood (the connector's ``scale_factor``), the
  remaining layers run on ``16 * grids_k`` tokens, and the connector shuffles each neighbourhood into one token:
  it sees real patch blocks, as in pretraining; ``grids_k`` <= 64 (the blocks of the grid).
* ``"point"``: one token per point, so the remaining layers run on ``grids_k`` tokens (16x fewer, in the forward
  pass and in training's backward pass through them); each token enters the connector as a uniform 4 x 4 block
  (its linear weight summed over the 16 slots), an approximation the pretrained connector never saw;
  ``grids_k`` <= 1024 (the patches). The sampler then carries a marker buffer (``grids.point_connector``) so a
  checkpoint of one design does not load into the other.

Choose ``"neighbourhood"`` to stay closest to what pretrained SmolVLA computes, ``"point"`` where the vision
tower's cost after ``L`` matters more; what accuracy either keeps with pretrained weights is not measured here.
"""

from __future__ import annotations

from typing import Any

from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

from .common import GridSPolicyMixin, as_grids_config, build_grids, mark_point_connector
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
        adapter = install_encoder_grids(
            self, tower, tower.encoder.layers, policy_type=self.name, after_layer=self.config.grids_after_layer,
            anchor_grid=anchor, fixed_grid=None, patch_size=(patch, patch), connector=model.connector,
            vision_dim=int(vision.hidden_size),
        )
        if self.config.grids_connector == "point":
            mark_point_connector(self.grids)
        return adapter

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
