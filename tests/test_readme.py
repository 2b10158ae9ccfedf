"""The README's quick start must run as written."""

import re
from pathlib import Path


def test_readme_python_blocks_run():
    """Each python block (the quick start, the Hugging Face patch) runs on its own, as written."""
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "README lost its quick start or its patch example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_starts_with_the_two_setup_commands():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "scripts/demo.sh" in first and "scripts/test.sh" in first
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci
