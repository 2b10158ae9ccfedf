"""Moved: suite facts to ``grids_vla.envs.libero.suites``, the task env to ``.task_env`` and ``make_env`` /
``get_suite`` / ``num_tasks`` (plain, LIBERO-PRO and LIBERO-plus suites) to ``.factory``; this module re-exports them
for old imports."""

from .factory import get_suite, make_env, num_tasks
from .suites import CAMERAS, MAX_STEPS, PRO_VARIANTS, STANDARD_SUITES
from .task_env import LiberoTaskEnv, list_suites

__all__ = ["CAMERAS", "MAX_STEPS", "PRO_VARIANTS", "STANDARD_SUITES", "LiberoTaskEnv", "get_suite", "list_suites",
           "make_env", "num_tasks"]
