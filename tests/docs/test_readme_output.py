"""What the README shows `make serve` printing is what the demo command prints (secrets
aside: `…` in the README stands for any text)."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
FIRST_LINE = "Demo product 'demo-widget' of user 'demo': created."


def shown_demo_output() -> list[str]:
    """The README's lines of the demo command's output: its ```text block, up to the lines
    that `make serve` adds after the command (the admin API token)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"^```text\n(" + re.escape(FIRST_LINE) + r".*?)^```", text, re.S | re.M)
    assert block, "README.md shows no demo output block"
    lines = block[1].splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("Admin API token"))]


@pytest.mark.django_db
def test_readme__demo_output__is_what_the_demo_command_prints():
    output = StringIO()
    call_command("demo", stdout=output, stderr=output)
    printed = output.getvalue().strip().splitlines()
    shown = shown_demo_output()
    assert len(printed) == len(shown), (printed, shown)
    for line, pattern in zip(printed, shown, strict=True):
        regex = ".*".join(re.escape(part) for part in pattern.split("…"))
        assert re.fullmatch(regex, line), f"README shows {pattern!r}, the command prints {line!r}"
