"""
The README and the pages under docs/: every link resolves (file and heading), every page is reachable from
the README, and no paragraph is said twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import _ROOT

PAGES = [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(page: Path) -> str:
    """The page without its code blocks (a link in code is not a link)."""
    return FENCE.sub("", page.read_text())


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(page).splitlines():
        if match := re.match(r"#+ (.*)", line):
            base = slug(match.group(1))
            anchor, n = base, 0
            while anchor in found:
                n += 1
                anchor = f"{base}-{n}"
            found.add(anchor)
    return found


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page)) if not target.startswith(("http://", "https://"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_resolves_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(_ROOT / target.partition("#")[0]).resolve() for target in links(_ROOT / "README.md")}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_no_paragraph_is_said_twice() -> None:
    seen: dict[str, str] = {}
    repeated = []
    for page in PAGES:
        for paragraph in re.split(r"\n\s*\n", prose(page)):
            text = " ".join(paragraph.split())
            if len(text) < 120 or text.startswith("|"):
                continue
            if text in seen:
                repeated.append(f"{page.name} repeats {seen[text]}: {text[:80]}...")
            seen.setdefault(text, page.name)
    assert repeated == []
