"""Suite-wide settings. With GRIDS_NO_SKIP=1 (set by scripts/test.sh) any skip fails the run: a test skipped while it
runs, and a whole module skipped while it is collected (a module-level ``pytest.importorskip``), so a missing optional
dependency can never pass CI silently (tests/test_conftest_guard.py checks this, with and without xdist)."""

import os

import pytest
from hypothesis import settings

# CI runs the same hypothesis examples every time (no example database on a fresh clone anyway).
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):  # an expected failure is reported as skipped too
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped at import (pytest.importorskip, pytest.skip(allow_module_level))
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("GRIDS_NO_SKIP") == "1" and _skipped and exitstatus == 0:
        print(f"\nGRIDS_NO_SKIP=1 but {len(_skipped)} tests or modules were skipped, e.g. {_skipped[:3]}")
        session.exitstatus = 1
