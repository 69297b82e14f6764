"""What a page shows is what a reader gets on a fresh clone: commands that run as printed,
and answers as curl prints them."""

import json
import re
from pathlib import Path

import pytest

from tests.docs.doc_examples import SHELL_LANGUAGES, documents, parse_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*documents(ROOT), ROOT / "load_tests" / "README.md"]
# `python manage.py` runs only where `python` is the project's: in the Docker image, or with
# .venv activated, which no page asks for.
BARE_MANAGE = re.compile(r"(?<![/.\w-])python3? manage\.py")
EXPECTED = re.compile(r"^\s*#\s*(?:(?P<status>[1-5]\d\d)(?:\s+|$))?(?P<json>[\[{].*)?$")


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page__manage_commands__name_the_projects_python(page):
    bare = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if BARE_MANAGE.search(line) and "docker" not in line
    ]
    assert not bare, "write `.venv/bin/python manage.py` (what `make serve` installs):\n" + (
        "\n".join(bare)
    )


def expected_answers(page: Path) -> list[tuple[int, str | None, str, str]]:
    """(line, status, the answer as written with its continuation lines joined, the command
    it follows) of every expected answer of the page's shell blocks."""
    found = []
    for block in parse_blocks(page):
        if block.language not in SHELL_LANGUAGES or not block.runs:
            continue
        lines = block.text.split("\n")
        command, i = "", 0
        while i < len(lines):
            match = EXPECTED.match(lines[i])
            if not match or not (match["status"] or match["json"]):
                if (
                    lines[i].lstrip().startswith(("curl ", "CLIENT_KEY=$(curl"))
                    or "$(curl" in lines[i]
                ):
                    command = lines[i]
                elif command.rstrip().endswith("\\") or command.count("'") % 2:
                    command += "\n" + lines[i]
                i += 1
                continue
            start, text = i, match["json"] or ""
            while text:
                try:
                    json.loads(text)
                    break
                except json.JSONDecodeError:
                    i += 1
                    text += lines[i].lstrip()[1:].strip()
            found.append((block.line + 1 + start, match["status"], text, command))
            i += 1
    return found


@pytest.mark.parametrize("page", documents(ROOT), ids=_id)
def test_page__status_shown__only_where_curl_prints_it(page):
    wrong = []
    for line, status, text, command in expected_answers(page):
        if status and text:
            wrong.append(f"{page.name}:{line}: a status before the answer (curl prints neither so)")
        elif status and "%{http_code}" not in command:
            wrong.append(f"{page.name}:{line}: status {status} shown, but the curl has no -w")
    assert not wrong, "\n".join(wrong)


def test_readme__answers__are_written_as_curl_prints_them():
    # Lab's answers are compact JSON; a long one is wrapped over `#  ` lines, at commas.
    wrong = []
    for line, _, text, _ in expected_answers(ROOT / "README.md"):
        if text:
            compact = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
            if text != compact:
                wrong.append(f"README.md:{line}: {text}\n  curl prints it as {compact}")
    assert not wrong, "\n".join(wrong)
