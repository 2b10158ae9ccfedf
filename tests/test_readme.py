"""The README's quick start must run as written."""

import re
from pathlib import Path


def test_readme_quick_start_runs():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    exec(compile(blocks[0], "README.md", "exec"), {})


def test_readme_starts_with_the_two_setup_commands():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "scripts/demo.sh" in first and "scripts/test.sh" in first
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
