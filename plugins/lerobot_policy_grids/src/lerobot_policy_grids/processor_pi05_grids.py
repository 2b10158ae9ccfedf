"""Pre/post-processors of ``pi05_grids``: exactly PI0.5's (GridS changes nothing outside the model)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors


def make_pi05_grids_pre_post_processors(config: Any, dataset_stats: Any = None) -> Any:
    """Delegate to LeRobot's PI0.5 factory (used if LeRobot looks the factory up by policy type)."""
    return make_pi05_pre_post_processors(config, dataset_stats=dataset_stats)
