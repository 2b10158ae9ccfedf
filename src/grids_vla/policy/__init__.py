"""The compact GridS VLA policy: configuration, modeling and the checkpoint layout (LeRobot-style modules).

Training and LIBERO evaluation live in :mod:`grids_vla.experiments`.
"""

from .configuration_grids_vla import GridSVLAConfig
from .modeling_grids_vla import GridSVLAPolicy, PolicyOutput, load_config

__all__ = ["GridSVLAConfig", "GridSVLAPolicy", "PolicyOutput", "load_config"]
