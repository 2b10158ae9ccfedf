"""Pre/post-processors of ``pi0_grids``: exactly PI0's (GridS changes nothing outside the model)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors


def make_pi0_grids_pre_post_processors(config: Any, dataset_stats: Any = None) -> Any:
    """Delegate to LeRobot's PI0 factory (used if LeRobot looks the factory up by policy type)."""
    return make_pi0_pre_post_processors(config, dataset_stats=dataset_stats)
