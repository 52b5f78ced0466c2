"""The docs hold together: every relative link and anchor of README.md and docs/*.md resolves.
Reads files only: no server, no `locust` process."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the text may hold code (`--chaos`) but no bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: a heading or a link in a code block is not one."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (`_` and `-` kept), spaces to `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a page: its headings' slugs, a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = _slug(match.group(2))
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image of a page, outside fenced code."""
    return [(number, match.group(1)) for number, line in _prose(page.read_text(encoding="utf-8"))
            for match in LINK.finditer(line)]


def test_the_pages_exist():
    names = {page.name for page in PAGES}
    assert "README.md" in names and len(names) > 5, names


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for number, target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / unquote(path)).resolve() if path else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and (resolved.suffix != ".md" or unquote(anchor) not in anchors(resolved)):
                broken.append(f"{where}: no such anchor in {resolved.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_slugs_are_githubs():
    assert _slug("Faults on purpose: `--chaos`") == "faults-on-purpose---chaos"
    assert _slug("The harness's own schedule: `hub`") == "the-harnesss-own-schedule-hub"
    assert _slug("Load shapes: `--shape steps` / `--shape spike`") == "load-shapes---shape-steps----shape-spike"
    assert _slug("Benchmarks: `bench/`") == "benchmarks-bench"
