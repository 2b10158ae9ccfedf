"""The ``GRIDS_NO_SKIP=1`` guard of tests/conftest.py: a skip of any kind fails an otherwise green run.

Each case runs pytest in a subprocess on a tiny temporary test folder that holds a copy of the suite's conftest, one
passing test module and one module that skips (at collection or while running). Without the guard that run exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

PASSING = "def test_passes():\n    assert 1 + 1 == 2\n"
SKIPPING = {
    # a module-level importorskip of a module that does not exist: the whole module is skipped at collection
    "collection": "import pytest\n\npytest.importorskip('grids_vla_no_such_module')\n\n\n"
                  "def test_never_collected():\n    assert False\n",
    # a skip inside a test while it runs
    "run": "import pytest\n\n\ndef test_skips():\n    pytest.skip('optional dependency missing')\n",
}


def _run(folder: Path, no_skip: bool, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GRIDS_NO_SKIP"))}
    if no_skip:
        env["GRIDS_NO_SKIP"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(folder),
                           *extra, str(folder)], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def _suite(tmp_path: Path, kind: str) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_ok.py").write_text(PASSING)
    (tmp_path / "test_skipped.py").write_text(SKIPPING[kind])
    return tmp_path


@pytest.mark.parametrize("kind", ["collection", "run"])
def test_a_skip_fails_the_run_only_under_grids_no_skip(tmp_path: Path, kind: str) -> None:
    folder = _suite(tmp_path, kind)
    plain = _run(folder, no_skip=False)
    assert plain.returncode == 0, plain.stdout + plain.stderr  # the skip alone would pass silently
    assert "1 passed, 1 skipped" in plain.stdout
    guarded = _run(folder, no_skip=True)
    assert guarded.returncode == 1, guarded.stdout + guarded.stderr
    assert "GRIDS_NO_SKIP=1 but 1 tests or modules were skipped" in guarded.stdout
    assert "test_skipped.py" in guarded.stdout.split("GRIDS_NO_SKIP=1 but")[1]  # it names what was skipped


def test_a_module_skipped_at_collection_fails_an_xdist_run(tmp_path: Path) -> None:
    """scripts/test.sh runs the suite with ``-n 2``: the workers' collection skips must reach the controller."""
    pytest.importorskip("xdist", reason="dev extra not installed: pip install 'grids-vla[dev]'")
    folder = _suite(tmp_path, "collection")
    plain = _run(folder, False, "-n", "1")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    guarded = _run(folder, True, "-n", "1")
    assert guarded.returncode == 1, guarded.stdout + guarded.stderr
    assert "test_skipped.py" in guarded.stdout.split("GRIDS_NO_SKIP=1 but")[1]


def test_passing_runs_and_expected_failures_stay_green(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_ok.py").write_text(PASSING + "\n\nimport pytest\n\n\n@pytest.mark.xfail(strict=True)\n"
                                         "def test_known_bug():\n    assert False\n")
    guarded = _run(tmp_path, no_skip=True)
    assert guarded.returncode == 0, guarded.stdout + guarded.stderr
    assert "1 passed, 1 xfailed" in guarded.stdout
