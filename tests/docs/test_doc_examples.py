"""Every example of README.md and docs/*.md runs against a live server, as a reader runs it.

Each page gets a tenant of its own on the end-to-end server (a real gunicorn over a fresh
database): the demo product made by `manage.py demo` and an admin API token from
`manage.py create_api_token`, exactly what `make serve` prints. The page's shell starts with
the variables README.md asks a reader to set: `$LAB` (the server's URL, on a port other than
the documented 8000), `$TOKEN`, `$LAB_CLIENT_KEY` (and `$CLIENT_KEY`, the same key). Then
the page's shell blocks run as printed, in order, in one bash, with `curl` wrapped to record
each call's status and answer, and the answers the page shows are compared with the real
ones. Nothing in a block is rewritten: a URL written out instead of `$LAB` fails. What
counts as an example and how answers are written: tests/docs/doc_examples.py.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.doc_examples import (
    PYTHON_LANGUAGES,
    SHELL_LANGUAGES,
    Block,
    DocError,
    check_runnable,
    documents,
    mismatch,
    parse_blocks,
    shell_script,
)

ROOT = Path(__file__).resolve().parents[2]
# The address `make serve` listens on by default: an example must reach the server through
# `$LAB`, so that it runs against Lab on any port.
DOCUMENTED_BASE = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\]):8000\b")
SCRIPT_TIMEOUT_SECONDS = 300

PREAMBLE = r"""
set -eo pipefail
: > "$DOC_DIR/calls"; : > "$DOC_DIR/expect"; : > "$DOC_DIR/blocks"
__doc_count() { local n; n=$(wc -l < "$DOC_DIR/calls"); echo "${n// /}"; }
curl() {
  printf '%s\n' "curl ${*//$'\n'/ }" >> "$DOC_DIR/calls"
  local n; n=$(__doc_count)
  command curl "$@" -sS --max-time 30 -o "$DOC_DIR/body.$n" -w '%{http_code}' \
    > "$DOC_DIR/status.$n"
  if [ -f "$DOC_DIR/body.$n" ]; then cat "$DOC_DIR/body.$n"; fi
}
__doc_expect() { echo "$1 $(__doc_count)" >> "$DOC_DIR/expect"; }
__doc_block() { echo "$1 $(__doc_count)" >> "$DOC_DIR/blocks"; }
"""


def _slug(page: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", page.stem.lower()).strip("-")


def _manage(server, *args: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()


def _tenant(server, username: str) -> dict[str, str]:
    """The variables README.md asks a reader to set from what `make serve` printed: the
    admin API's URL, an admin API token and the demo's client key."""
    demo = _manage(server, "demo", "--username", username, "--base-url", server.base_url)
    client_key = next(line for line in demo if line.startswith("Client key: "))
    client_key = client_key.removeprefix("Client key: ")
    return {
        "LAB": server.base_url,
        "TOKEN": _manage(server, "create_api_token", username)[-1],
        "LAB_CLIENT_KEY": client_key,
        "CLIENT_KEY": client_key,
    }


def _python_block(block: Block, variables: dict[str, str]) -> str:
    names = "".join(f"{name} = os.environ[{name!r}]\n" for name in sorted(variables))
    return (
        f"\"$DOC_PYTHON\" - <<'__DOC_PYTHON_END__'\nimport os\n{names}{block.text}"
        "__DOC_PYTHON_END__\n"
    )


def _script(blocks: list[Block], variables: dict[str, str]) -> tuple[str, dict]:
    parts, expectations = [PREAMBLE], {}
    for index, block in enumerate(blocks):
        parts.append(f"\n__doc_block {index}\n")
        if block.language in SHELL_LANGUAGES:
            script = shell_script(block, tag=str(index))
            for number, expectation in enumerate(script.expectations):
                expectations[f"{index}.{number}"] = expectation
            parts.append(script.text)
        elif block.language in PYTHON_LANGUAGES:
            parts.append(_python_block(block, variables))
    return "".join(parts), expectations


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def run_page(server, page: Path, folder: Path) -> list[str]:
    """Run the examples of `page`; return what is wrong with them (empty: all good)."""
    blocks = parse_blocks(page)
    for block in blocks:
        check_runnable(block)
    runnable = [block for block in blocks if block.runs]
    if not runnable:
        return []
    hard_coded = [block.where for block in runnable if DOCUMENTED_BASE.search(block.text)]
    if hard_coded:
        return [f"{where}: an address written out where $LAB belongs" for where in hard_coded]
    assert not DOCUMENTED_BASE.search(server.base_url), "the examples must run on another port"
    variables = _tenant(server, f"doc-{_slug(page)}")
    text, expectations = _script(runnable, variables)
    env = {
        **server.env,
        **variables,
        "DOC_DIR": str(folder),
        "DOC_PYTHON": sys.executable,
        # `python` is the project's (as in an activated virtualenv), `python3` the system's.
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]
        ),
    }
    # `.venv/bin/python manage.py ...` works in the folder the examples run in (their files
    # stay there), as in a checkout where `make serve` made .venv.
    (folder / "manage.py").symlink_to(ROOT / "manage.py")
    venv_python = folder / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    # A script, not a symlink: a virtualenv's Python finds its packages from its own path.
    venv_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    venv_python.chmod(0o755)
    completed = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", text],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
    )
    calls = _read(folder / "calls").splitlines()
    block_starts = [line.split() for line in _read(folder / "blocks").splitlines()]
    problems = []
    if completed.returncode != 0:
        failed = runnable[int(block_starts[-1][0])] if block_starts else runnable[0]
        problems.append(
            f"{failed.where}: the block failed (exit {completed.returncode}):\n"
            f"{completed.stderr[-2000:]}"
        )

    def where_of(call: int) -> str:
        started = [int(b) for b, count in block_starts if int(count) < call]
        block = runnable[started[-1]] if started else runnable[0]
        return f"{block.where} ({calls[call - 1][:160]})"

    expected_status: dict[int, int] = {}
    for tag, count in (line.split() for line in _read(folder / "expect").splitlines()):
        expectation, call = expectations[tag], int(count)
        block_index = int(tag.split(".")[0])
        first_call = next(int(c) for b, c in block_starts if int(b) == block_index) + 1
        label = f"{page.name}:{expectation.line}"
        if call < first_call:
            problems.append(f"{label}: an expected answer with no curl before it in its block")
            continue
        status = int(_read(folder / f"status.{call}") or 0)
        if expectation.status is not None:
            expected_status[call] = expectation.status
        if expectation.has_body:
            body = _read(folder / f"body.{call}")
            try:
                actual = json.loads(body)
            except ValueError:
                problems.append(f"{label}: the answer is not JSON: {body[:300]!r}")
                continue
            found = mismatch(expectation.body, actual)
            if found:
                problems.append(f"{label}: {found}\n  the whole answer: {body[:1500]}")
    for call in range(1, len(calls) + 1):
        status = int(_read(folder / f"status.{call}") or 0)
        wanted = expected_status.get(call)
        if wanted is not None and status != wanted:
            problems.append(f"{where_of(call)}: answered {status}, the page shows {wanted}")
        elif wanted is None and not 200 <= status < 400:
            body = _read(folder / f"body.{call}")[:500]
            problems.append(f"{where_of(call)}: answered {status}: {body}")
    return problems


@pytest.mark.e2e
@pytest.mark.parametrize("page", documents(ROOT), ids=lambda page: str(page.relative_to(ROOT)))
def test_page__every_example__runs_and_answers_as_shown(docs_server, page, tmp_path):
    try:
        problems = run_page(docs_server, page, tmp_path)
    except DocError as error:
        pytest.fail(str(error), pytrace=False)
    assert not problems, "\n".join(problems)
