"""LeRobot policy plugin: GridS visual-token resampling for SmolVLA, ACT, PI0 and PI0.5.

Importing this package registers the policy types ``smolvla_grids`` and ``act_grids`` (and ``pi0_grids`` /
``pi05_grids`` where the installed LeRobot's PI0 / PI0.5 modules import), which LeRobot's
``register_third_party_plugins()`` does for every installed distribution named ``lerobot_policy_*``.
"""

from __future__ import annotations

import logging

from .common import GridSConfigFields, GridSPolicyMixin
from .configuration_act_grids import ACTGridsConfig
from .configuration_smolvla_grids import SmolVLAGridsConfig

__all__ = ["ACTGridsConfig", "SmolVLAGridsConfig", "GridSConfigFields", "GridSPolicyMixin", "AVAILABLE_TYPES"]
__version__ = "0.1.0"

AVAILABLE_TYPES = ["smolvla_grids", "act_grids"]

try:  # PI0 / PI0.5 need their upstream modules (lerobot >= 0.4 with a recent transformers); optional here
    from .configuration_pi0_grids import PI0GridsConfig  # noqa: F401
    from .configuration_pi05_grids import PI05GridsConfig  # noqa: F401
except Exception as exc:  # noqa: BLE001 - any import failure of the upstream modules means "not available"
    logging.getLogger(__name__).info("pi0_grids / pi05_grids not registered: %s", exc)
else:
    __all__ += ["PI0GridsConfig", "PI05GridsConfig"]
    AVAILABLE_TYPES += ["pi0_grids", "pi05_grids"]
