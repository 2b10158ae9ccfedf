"""``PI05GridsPolicy``: LeRobot's PI0.5 with GridS after SigLIP + projector (256 -> ``grids_k`` tokens per camera).

``PaliGemmaWithExpertModel.embed_image`` is wrapped on the instance (see :mod:`lerobot_policy_grids.vlm`);
``embed_prefix`` builds its masks from the returned length. Verified with lerobot 0.6.x on Python 3.12
(``tests_py312``, tiny random PaliGemma).
"""

from __future__ import annotations

from lerobot.policies.pi05.modeling_pi05 import PI05Policy

from .common import GridSPolicyMixin
from .configuration_pi05_grids import PI05GridsConfig
from .modeling_pi0_grids import PIGridsMixin


class PI05GridsPolicy(PIGridsMixin, GridSPolicyMixin, PI05Policy):
    """PI0.5 + GridS. Accepts a :class:`PI05GridsConfig` (or a plain PI0.5 config, converted with a warning)."""

    config_class = PI05GridsConfig
    name = "pi05_grids"
