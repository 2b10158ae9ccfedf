"""Build any LIBERO suite or task by name: the suites LIBERO registers (standard and LIBERO-PRO, ``task_env``) and
LIBERO-plus suites (``<suite>_liberoplus_<pattern>``, ``plus``) behind one :func:`make_env` and :func:`get_suite`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .plus import get_plus_suite, make_plus_env
from .suites import PLUS_SUITE_TAG
from .task_env import LiberoTaskEnv, get_plain_suite, make_plain_env

__all__ = ["get_suite", "make_env", "num_tasks"]


def get_suite(suite: str) -> Any:
    """The benchmark object of ``suite`` (any name LIBERO registers, with a clear error when unknown); a LIBERO-plus
    suite name gives a view of its matching tasks."""
    return get_plus_suite(suite) if PLUS_SUITE_TAG in suite else get_plain_suite(suite)


def num_tasks(suite: str) -> int:
    """Number of tasks in ``suite``."""
    return get_suite(suite).get_num_tasks()


def make_env(
    suite: str,
    task_id: int,
    image_size: int = 128,
    cameras: Sequence[str] = ("agentview", "eye_in_hand"),
    msaa: bool = False,
    render: bool = True,
    hard_reset: bool = False,
    perturbations: Sequence[Any] = (),
) -> LiberoTaskEnv:
    """Build task ``task_id`` of ``suite``: a :class:`~.task_env.LiberoTaskEnv`, or for a LIBERO-plus suite a
    :class:`~.plus.LiberoPlusTaskEnv`. The arguments are those of :func:`~.task_env.make_plain_env`."""
    build = make_plus_env if PLUS_SUITE_TAG in suite else make_plain_env
    return build(suite, task_id, image_size, tuple(cameras), msaa, render, hard_reset, tuple(perturbations))
