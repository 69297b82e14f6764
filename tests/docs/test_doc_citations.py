"""Citations of a page's sections lead somewhere: every `docs/x.md §N`, `RESULTS.md, "Title"`
and `"Title" in docs/x.md` in the code, the tests and the pages names a heading that the
cited page has (a section renamed or renumbered leaves no reference to a name that is gone)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where citations are written: the code, its tests and tools, and the pages.
SOURCES = ("lab", "decide", "admin_api", "config", "rules", "deploy", "load_tests", "tests", "docs")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".conf", ".lua", ".sh", ".toml"}
TOP_FILES = ("README.md", "Makefile", "Dockerfile", "gunicorn.conf.py", "pyproject.toml")

PAGE = r"(?P<page>(?:load_tests/|docs/)?[A-Za-z_-]+\.md)"
# `docs/results.md §9`, `docs/scaling.md §4.1`
NUMBERED = re.compile(PAGE + r"\)?,? §\s?(?P<number>\d+(?:\.\d+)?)\b")
# `RESULTS.md, "Decide benchmark"`, `(docs/operations.md, "High availability")`
TITLED_AFTER = re.compile(PAGE + r"\)?,?\s\(?(?:section\s)?\"(?P<title>[^\"]{3,120})\"")
# `"Running in production" in [docs/operations.md](...)`
TITLED_BEFORE = re.compile(r"\"(?P<title>[^\"]{3,120})\"\s(?:in|of)\s\[?" + PAGE)
# A bare `§N` of a page cites that page; the NIST handbook's sections (§6.1.6) have more dots.
# `§11 of the specification` cites another document.
BARE = re.compile(r"(?<!\.md\s)§\s?(?P<number>\d+(?:\.\d+)?)(?![\d.]*\d)(?!\sof\s)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.S | re.M)


def sources() -> list[Path]:
    """Every file that may cite a page, this one aside (its docstring shows the forms)."""
    found = [ROOT / name for name in TOP_FILES if (ROOT / name).exists()]
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*")):
            if (
                path.suffix in SUFFIXES
                and path.is_file()
                and "migrations" not in path.parts
                and path != Path(__file__).resolve()
            ):
                found.append(path)
    return found


def resolve(page: str, citing: Path) -> Path | None:
    """The file a citation names: a path from the repository's root, or a page's name
    (`RESULTS.md` is load_tests/RESULTS.md; `results.md` a page of docs/)."""
    for candidate in (
        ROOT / page,
        citing.parent / page,
        ROOT / "docs" / page,
        ROOT / "load_tests" / page,
    ):
        if candidate.is_file():
            return candidate
    return None


def headings(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [re.sub(r"\s+", " ", heading.replace("`", "")) for heading in HEADING.findall(text)]


def flat(path: Path) -> str:
    """The text with comment and paragraph line breaks joined, as a reader reads it."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return re.sub(r"\s*\n\s*(?:#+\s|//\s|--\s)?\s*", " ", text)


def broken_citations(path: Path) -> list[str]:
    text = flat(path)
    broken = []
    for match in NUMBERED.finditer(text):
        cited = resolve(match["page"], path)
        if cited is None:
            broken.append(f"{match[0]!r}: no page {match['page']}")
        elif not any(
            h.startswith(f"{match['number']}.") or h.startswith(f"{match['number']} ")
            for h in headings(cited)
        ):
            broken.append(
                f"{match[0]!r}: {cited.relative_to(ROOT)} has no section {match['number']}"
            )
    for pattern in (TITLED_AFTER, TITLED_BEFORE):
        for match in pattern.finditer(text):
            cited = resolve(match["page"], path)
            title = re.sub(r"\s+", " ", match["title"].replace("`", "")).lower()
            if cited is None:
                broken.append(f"{match[0]!r}: no page {match['page']}")
            elif not any(title in heading.lower() for heading in headings(cited)):
                broken.append(
                    f"{match[0]!r}: no heading of {cited.relative_to(ROOT)} says {title!r}"
                )
    if path.suffix == ".md":
        numbers = {
            match[1] for h in headings(path) if (match := re.match(r"(\d+(?:\.\d+)?)\.?\s", h))
        }
        if numbers:
            for match in BARE.finditer(FENCE.sub("", text)):
                if match["number"] not in numbers:
                    broken.append(f"{match[0]!r}: {path.name} has no section {match['number']}")
    return broken


@pytest.mark.parametrize("path", sources(), ids=lambda path: str(path.relative_to(ROOT)))
def test_source__section_citations__name_headings_that_exist(path):
    broken = broken_citations(path)
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)
