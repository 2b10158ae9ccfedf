"""The docs' relative links and images point at files that exist: a moved figure or a renamed results file breaks a
test, not a reader's click."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("docs", "benchmarks", "plugins", "examples", "scripts")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*.md")
                  if not any(part.startswith(".") or part == "runs" for part in p.relative_to(ROOT).parts)]
    return files


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold commands, not links
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    return broken


def test_relative_links_resolve() -> None:
    files = markdown_files()
    assert len(files) > 20  # the walk found the docs, so an empty pass cannot hide a broken one
    bad = {str(p.relative_to(ROOT)): b for p in files if (b := broken_links(p))}
    assert not bad, f"links to missing files: {bad}"


def test_a_broken_link_is_found(tmp_path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.png").write_bytes(b"")
    page.write_text("![ok](there.png) [gone](missing.md#part) [web](https://example.org) [anchor](#top)\n"
                    "```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page) == ["missing.md#part"]
