"""The pages' links lead somewhere: every relative link names a file of the repository and,
with `#anchor`, a heading of that page (as GitHub makes anchors from headings)."""

import re
from pathlib import Path

import pytest

from lab.dev.demo import DEMO_SALTS
from tests.docs.doc_examples import documents

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.S | re.M)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", documents(ROOT), ids=lambda page: page.name)
def test_page__relative_links__name_files_and_headings_that_exist(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http(s):, mailto: ...
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT)}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_contract__demo_table__lists_the_salts_the_demo_uses():
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    for key, salt in DEMO_SALTS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{key}` |"))
        assert f"`{salt}`" in row, row
