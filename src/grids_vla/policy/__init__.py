"""The compact GridS VLA policy (LeRobot-style configuration + modeling modules) and its training loop."""

from .configuration_grids_vla import GridSVLAConfig
from .modeling_grids_vla import GridSVLAPolicy, PolicyOutput, load_config

__all__ = ["GridSVLAConfig", "GridSVLAPolicy", "PolicyOutput", "load_config"]
