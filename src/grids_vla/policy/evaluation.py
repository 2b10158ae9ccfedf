"""Moved to :mod:`grids_vla.experiments` (``evaluate``: EvalConfig, evaluate; ``stats``: intervals and paired tests;
``rollout``: episodes; ``report``: summaries, markdown, videos) and, for ``default_max_steps``, to
:func:`grids_vla.envs.libero.suites.step_limit`; the old names still import from here."""

from ..envs.libero.suites import step_limit as default_max_steps
from ..experiments.evaluate import EvalConfig, evaluate
from ..experiments.report import (
    EPISODES_NAME,
    RUN_NAME,
    VIDEO_FPS,
    draw_points_np,
    load_episodes,
    summarize,
    to_markdown,
    video_frame,
    write_mp4,
)
from ..experiments.rollout import NOOP_ACTION, observation_to_batch, parse_perturbation, run_episode, task_instruction
from ..experiments.stats import Z95, mcnemar_exact, paired_outcomes, wilson_interval
from .checkpoint import resolve_checkpoint

__all__ = ["EvalConfig", "evaluate", "EPISODES_NAME", "RUN_NAME", "VIDEO_FPS", "draw_points_np", "load_episodes",
           "summarize", "to_markdown", "video_frame", "write_mp4", "NOOP_ACTION", "default_max_steps",
           "observation_to_batch", "parse_perturbation", "run_episode", "task_instruction", "Z95", "mcnemar_exact",
           "paired_outcomes", "wilson_interval", "resolve_checkpoint"]
