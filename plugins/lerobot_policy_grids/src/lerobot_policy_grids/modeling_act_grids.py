"""``ACTGridsPolicy``: LeRobot's ACT with GridS on each camera's ResNet feature map.

ACT flattens every camera's layer-4 map (e.g. 15 x 20 = 300 tokens at 480 x 640) into encoder tokens, with a 2-D
sinusoidal positional embedding per cell. Here three forward hooks on ACT's own modules (no code copied, no
parameter renamed) make each camera contribute ``grids_k`` tokens instead:

* ``backbone``: its ``feature_map`` (B, C, H, W) is resampled by GridS to a (B, C, 1, K) map, which ACT then
  projects and flattens as usual;
* ``encoder_img_feat_input_proj``: the dense sinusoidal embedding of the H x W map is bilinearly sampled at the
  same K points and added to the projected tokens. The points differ per sample, while ACT's positional slot is
  shared across the batch, so the position travels with the token (as GridS's geometry injection does);
* ``encoder_cam_feat_pos_embed``: returns zeros for the K tokens (their position is already in the token).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from grids_vla.sampling import bilinear_sample
from lerobot.policies.act.modeling_act import ACTPolicy
from torch import Tensor, nn

from .common import GridSPolicyMixin, as_grids_config, build_grids, sampler_name
from .configuration_act_grids import ACTGridsConfig

RESNET_STRIDE = 32


class ACTGridsPolicy(GridSPolicyMixin, ACTPolicy):
    """ACT + GridS. Accepts an :class:`ACTGridsConfig` (or a plain ACT config, converted with a warning)."""

    config_class = ACTGridsConfig
    name = "act_grids"

    def __init__(self, config: ACTGridsConfig | Any = None, **kwargs: Any) -> None:
        config = as_grids_config(config, ACTGridsConfig)
        super().__init__(config, **kwargs)
        act = self.model
        if not self.config.image_features:
            raise ValueError("act_grids needs at least one camera (image feature); use act for state-only inputs")
        self._grids_cameras = list(self.config.image_features)
        grids = {self._grid_of(k) for k in self._grids_cameras}
        grid = grids.pop() if len(grids) == 1 else None
        dim = int(act.encoder_img_feat_input_proj.in_channels)
        self.grids = build_grids(self.config, dim, self._grids_cameras, grid)
        self._grids_queue: list[str] = []
        self._grids_pending: list[tuple[Tensor, tuple[int, int], bool]] = []
        act.register_forward_pre_hook(self._grids_start)
        act.backbone.register_forward_hook(self._grids_backbone_hook)
        act.encoder_cam_feat_pos_embed.register_forward_hook(self._grids_pos_embed_hook)
        act.encoder_img_feat_input_proj.register_forward_hook(self._grids_input_proj_hook)

    def _grid_of(self, key: str) -> tuple[int, int]:
        """Layer-4 grid of a camera: every ResNet stage rounds up, so it is ceil(H / 32) x ceil(W / 32)."""
        _, h, w = self.config.image_features[key].shape
        return math.ceil(h / RESNET_STRIDE), math.ceil(w / RESNET_STRIDE)

    def _grids_start(self, module: nn.Module, args: Any) -> None:
        self._grids_queue = list(self._grids_cameras)
        self._grids_pending = []

    def _grids_backbone_hook(self, module: nn.Module, args: Any, output: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self._grids_queue:
            raise RuntimeError("ACT ran its backbone on more images than the config has cameras")
        camera = self._grids_queue.pop(0)
        fmap = output["feature_map"]
        name = sampler_name(camera)
        out = self.grids.forward_camera(name, fmap, layout="nchw")
        self._grids_record(camera, out)
        sampler = self.grids.sampler if self.grids.shared else self.grids.samplers[name]
        self._grids_pending.append((out.coords, (fmap.shape[2], fmap.shape[3]), sampler.align_corners))
        resampled = out.tokens.transpose(1, 2).unsqueeze(2)  # (B, C, 1, K): ACT flattens it to K tokens
        return {**output, "feature_map": resampled}

    def _grids_pos_embed_hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        return torch.zeros_like(output)

    def _grids_input_proj_hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        coords, (h, w), align_corners = self._grids_pending.pop(0)
        dense = self.model.encoder_cam_feat_pos_embed.forward(output.new_zeros(1, 1, h, w))  # (1, D, H, W), no hook
        dense = dense.flatten(2).transpose(1, 2).expand(coords.shape[0], -1, -1).to(output.dtype)
        pos = bilinear_sample(dense, (h, w), coords.to(output.dtype), align_corners)  # (B, K, D)
        return output + pos.transpose(1, 2).unsqueeze(2)
