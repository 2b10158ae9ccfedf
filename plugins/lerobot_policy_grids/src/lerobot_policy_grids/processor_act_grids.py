"""Pre/post-processors of ``act_grids``: exactly ACT's (GridS changes nothing outside the model)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.act.processor_act import make_act_pre_post_processors


def make_act_grids_pre_post_processors(config: Any, dataset_stats: Any = None) -> Any:
    """Delegate to LeRobot's ACT factory (used if LeRobot looks the factory up by policy type)."""
    return make_act_pre_post_processors(config, dataset_stats=dataset_stats)
