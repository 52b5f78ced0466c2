"""The docs hold together: every relative link and anchor of README.md and docs/*.md resolves,
and docs/development.md's Layout names every file of the code's folders. Reads files only: no
server, no `locust` process."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the text may hold code (`--chaos`) but no bracket.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# The folders whose every file the Layout table names, and what in them is not a file of the project.
LAYOUT_FOLDERS = ("bench", "db", "examples", "harness", "tasks", "tests", "toolserver", "transport")
NOT_PROJECT_FILES = {"__pycache__", "screenshots", "node_modules"}


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


def _layout_paths() -> set[str]:
    """The paths the first column of docs/development.md's Layout table names."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    table = text[text.index("## Layout"):]
    named = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = line.split(" | ")
            named.update(re.findall(r"`([^`]+)`", cells[0]))
    return named


def test_the_layout_names_every_file():
    named = _layout_paths()
    missing = []
    for folder in LAYOUT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            relative = path.relative_to(ROOT)
            project_file = path.is_file() and not NOT_PROJECT_FILES & set(relative.parts) and path.suffix != ".pyc"
            if project_file and relative.as_posix() not in named:
                missing.append(relative.as_posix())
    assert not missing, f"docs/development.md's Layout does not name: {', '.join(missing)}"
    gone = sorted(path for path in named if not (ROOT / path).exists())
    assert not gone, f"docs/development.md's Layout names what does not exist: {', '.join(gone)}"


def test_the_layout_is_ordered_by_folder():
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[0] for line in text[text.index("## Layout"):].splitlines() if line.startswith("| `")]
    paths = [re.search(r"`([^`]+)`", row).group(1) for row in rows]
    folders = [path.split("/")[0] if "/" in path else "" for path in paths]
    # The files at the top first, then each folder's rows together, the folders in order.
    assert folders == sorted(folders), list(zip(folders, paths))


def test_the_report_page_says_the_report_version_of_today():
    from harness.report_shape import REPORT_VERSION

    page = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    assert f"is a whole number: **{REPORT_VERSION}** today." in page
    assert f"- **{REPORT_VERSION}**: " in page, "its line in Versions"
