"""``pi0_grids``: PI0 whose PaliGemma image tokens are resampled to ``grids_k`` per camera by GridS.

Skeleton written like ``smolvla_grids``; it needs a LeRobot whose PI0 works (lerobot 0.6 on Python 3.12, or
0.4.4 with the transformers fork it asks for), and is registered only when the upstream PI0 modules import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pi0.configuration_pi0 import PI0Config

from .common import GridSConfigFields

importlib.import_module("lerobot.policies.pi0.modeling_pi0")  # fail here (not at policy creation) if unusable


@PreTrainedConfig.register_subclass("pi0_grids")
@dataclass
class PI0GridsConfig(PI0Config, GridSConfigFields):
    """:class:`PI0Config` plus the GridS fields (LeRobot's PI0 processors are reused as is)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_grids(supports_language=True)
