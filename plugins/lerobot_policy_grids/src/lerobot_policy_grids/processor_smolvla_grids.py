"""Pre/post-processors of ``smolvla_grids``: exactly SmolVLA's (GridS changes nothing outside the model)."""

from __future__ import annotations

from typing import Any

from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors


def make_smolvla_grids_pre_post_processors(config: Any, dataset_stats: Any = None) -> Any:
    """Delegate to LeRobot's SmolVLA factory (used if LeRobot looks the factory up by policy type)."""
    return make_smolvla_pre_post_processors(config, dataset_stats=dataset_stats)
