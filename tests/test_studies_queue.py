"""``benchmarks/studies.sh``, the two studies' queue: it parses, and every stage it names is a stage of the plan it
runs, so renaming a stage in a plan file cannot leave the queue silently running nothing."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUEUE = ROOT / "benchmarks" / "studies.sh"
PLANS = {"LIBERO": ROOT / "benchmarks" / "libero" / "study.json", "SO101": ROOT / "benchmarks" / "so101" / "study.json",
         "SPATIAL": ROOT / "benchmarks" / "libero" / "study_spatial.json"}
CALL = r'^ *"\$\{(LIBERO|SO101|SPATIAL|STILL)\[@\]\}"(.*)$'  # a step: the runner on a plan, or a script


def test_queue_parses_and_names_only_stages_of_its_plans() -> None:
    assert subprocess.run(["bash", "-n", str(QUEUE)], capture_output=True).returncode == 0
    text = QUEUE.read_text()
    calls = re.findall(CALL, text, flags=re.M)
    # named stages first, then each whole plan, the second LIBERO suite last
    assert [c[0] for c in calls] == ["LIBERO", "STILL", "SO101", "LIBERO", "SO101", "SPATIAL"]
    for plan, rest in (c for c in calls if c[0] in PLANS):
        stages = {s["name"] for s in json.loads(PLANS[plan].read_text())["stages"]}
        rest = rest.split("||", 1)[0]  # the call, without its `|| failed ...` (a failed step does not stop the queue)
        named = rest.split("--stage", 1)[1].split() if "--stage" in rest else []
        assert set(named) <= stages, f"{plan}: {sorted(set(named) - stages)} are not stages of {PLANS[plan].name}"
    for plan, path in PLANS.items():  # the queue runs each plan by the file the test reads
        assert f"--plan {path.relative_to(ROOT)}" in text, plan


def test_the_queue_checks_both_plans_archives_before_its_first_step() -> None:
    """A run archived on other demos or settings stops its stage with the difference; the queue checks that for both
    plans (``--phase report``, seconds) before it trains anything, so the stop comes at once, not hours later."""
    text = QUEUE.read_text()
    first_step = text.index("FAILED=()")
    assert 'preflight() { "$@" --phase report' in text
    for plan in PLANS:
        assert text.index(f'preflight "${{{plan}[@]}}"') < first_step, plan


def test_a_failed_step_does_not_stop_the_queue(tmp_path: Path) -> None:
    """Every study call is followed by `|| failed`, and the queue's end exits non-zero naming what failed: run the
    script's tail with the runner replaced by `false` / `true`."""
    text = QUEUE.read_text()
    calls = [c[1] for c in re.findall(CALL, text, flags=re.M)]
    assert calls and all("|| failed " in c for c in calls)
    tail = text[text.index("FAILED=()"):]
    every = "failed: LIBERO named stages points held still SO-101 named stages LIBERO plan SO-101 plan"
    for runner, demos, code, said in (("false", "false", 1, f"{every} libero_spatial demos ("),
                                      ("false", "true", 1, f"{every} libero_spatial plan ("),
                                      ("true", "true", 0, "== studies.sh: done (")):
        script = tmp_path / f"{runner}_{demos}.sh"
        steps = "".join(f"{name}=({runner})\n" for name in ("LIBERO", "SO101", "SPATIAL", "STILL"))
        script.write_text(f"set -euo pipefail\n{steps}SPATIAL_DEMOS=({demos})\n{tail}")
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        assert out.returncode == code and said in out.stdout, out.stdout
