"""Any skipped LIBERO-plus test fails the run: these tests only run where LIBERO-plus is installed, so a skip
would mean a check silently did not happen."""

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped while it was imported
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # 5: nothing was collected, which is what a skip of every module looks like; it must not pass either
    if _skipped and exitstatus in (0, 5):
        print(f"\n{len(_skipped)} LIBERO-plus tests were skipped, e.g. {_skipped[:3]}")
        session.exitstatus = 1
