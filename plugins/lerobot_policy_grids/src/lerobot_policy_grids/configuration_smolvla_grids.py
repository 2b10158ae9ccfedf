"""``smolvla_grids``: SmolVLA whose visual tokens are resampled to ``grids_k`` per camera by GridS."""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

from .common import GridSConfigFields


@PreTrainedConfig.register_subclass("smolvla_grids")
@dataclass
class SmolVLAGridsConfig(SmolVLAConfig, GridSConfigFields):
    """:class:`SmolVLAConfig` plus the GridS fields (LeRobot's SmolVLA processors are reused as is)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_grids(supports_language=True, pixel_shuffle=True)
