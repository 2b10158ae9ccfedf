"""``act_grids``: ACT whose ResNet feature map is resampled to ``grids_k`` tokens per camera by GridS."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.act.configuration_act import ACTConfig

from .common import GridSConfigFields


@PreTrainedConfig.register_subclass("act_grids")
@dataclass
class ACTGridsConfig(ACTConfig, GridSConfigFields):
    """:class:`ACTConfig` plus the GridS fields (no language input, so ``grids_conditioning`` must be ``none``).

    ``grids_after_layer`` must stay ``None``: the ResNet backbone has no token layers to resample between.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_grids(
            supports_language=False,
            after_layer_note="its ResNet backbone has no transformer layers to resample between (GridS runs on the "
            "layer-4 feature map)",
        )
