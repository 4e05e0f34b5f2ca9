"""The README is a front door (short, with the test command CI runs) and every relative link in it and in docs/
leads somewhere: to a file that exists and, with a #fragment, to a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", CODE_BLOCK.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(page: Path) -> list[str]:
    text = CODE_BLOCK.sub("", page.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "make test" in text and "make demo" in text
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text(), "CI must run the README's test command"
    assert "Python ≥ 3.11" in text and 'requires-python = ">=3.11"' in (REPO / "pyproject.toml").read_text()


def test_every_docs_page_is_linked_from_the_readme():
    readme_links = set(relative_links(REPO / "README.md"))
    for page in PAGES[1:]:
        assert any(link.split("#")[0] == f"docs/{page.name}" for link in readme_links), f"{page.name} is unlinked"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    for link in relative_links(page):
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} points at nothing"
        if fragment:
            assert fragment in anchors(target), f"{page.name}: {link}: no heading #{fragment} in {target.name}"


def test_the_anchor_rule_matches_githubs():
    page = REPO / "docs" / "results.md"
    assert "pascal-voc-2012-published-references" in anchors(page)
    assert "what-a-real-run-costs-make-rehearse" in anchors(page)


def test_the_performance_pages_bench_sections_are_what_their_results_render():
    from devtools import bench_page

    page = REPO / "docs" / "performance.md"
    assert bench_page.SECTION.search(page.read_text()), "the page has no generated bench section"
    assert bench_page.render(page.read_text(), page.parent) == page.read_text(), (
        "docs/performance.md differs from its results files: run python -m tools.bench_page")
