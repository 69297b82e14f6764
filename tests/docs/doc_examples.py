"""The examples of the project's Markdown pages, as a runner sees them.

Which fenced blocks are examples, and how their expected answers are written:

- ```sh (also bash, shell) blocks are commands a reader pastes: they are run, block after
  block, in one shell per page, so variables set in one block serve the next ones.
  Their commands must be ones the runner can run against a test server (curl, variable
  assignments, echo/printf, python3 and jq as filters, and `.venv/bin/python manage.py`
  demo, create_api_token and import_measurements against the server's database); any other
  command (make, pip, docker, gunicorn, manage.py runserver...) needs a marker on the line
  right before the block: `<!-- doctest: skip — why it cannot run -->`.
- ```python blocks are run as scripts, with the variables README.md asks a reader to set
  (LAB, TOKEN, LAB_CLIENT_KEY, CLIENT_KEY) defined as Python names.
- Every other block (json, text, sql, csv, an untagged one) is an illustration and is not
  run; an untagged block that starts like a command (curl, make, $ ...) is an error, so a
  command cannot escape the runner by losing its tag.
- The answer a curl must give is written right after it as a comment, `# {...}` (continued
  on further `# ` lines if long), optionally preceded by its status: `# 404 {...}` or
  `# 204`; or as a ```json block that follows the sh block with nothing in between (the
  answer of the block's last curl). Without a status, a curl must answer 2xx or 3xx.
- In an expected answer, `"…"` stands for any value (a secret, an id, a time, a random
  salt); a string ending in `…` for any string that starts with what precedes it
  (`"lck_…"`); a key `"…"` in an object for any further keys; and `"…"` as the last item
  of a list for any further items. Everything else must be equal, as JSON.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
PYTHON_LANGUAGES = {"python", "py", "python3"}
# Programs a shell example may run: curl against the server, and what filters its answer.
ALLOWED_PROGRAMS = {
    "curl",
    "echo",
    "printf",
    "export",
    "jq",
    "python3",
    "cat",
    "test",
    "[",
    "true",
    # Management commands that run against the test server's database and return.
    "manage.py create_api_token",
    "manage.py demo",
    "manage.py import_measurements",
}
ELLIPSIS = "…"
# How a page runs a management command: the project's Python, made by `make serve`.
PYTHONS = (".venv/bin/python", "python", "python3")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_SKIP = re.compile(r"^<!--\s*doctest:\s*skip\b\s*[—:–-]*\s*(?P<reason>.*?)\s*-->$")
_MARKER = re.compile(r"^<!--\s*doctest\b")
_EXPECT = re.compile(r"^\s*#\s*(?:→\s*)?(?:(?P<status>[1-5]\d\d)(?:\s+|$))?(?P<json>[\[{].*)?$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_COMMANDISH = re.compile(r"^\s*(\$ |curl |make |pip |python |python3 |docker |gunicorn )")


class DocError(Exception):
    """A page's examples cannot be run as written (not a wrong answer: a malformed page)."""


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip_reason: str | None = None
    # A ```json block right after this one: the answer of its last curl.
    answer_block: str | None = None
    answer_line: int | None = None

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.skip_reason is None and self.language in SHELL_LANGUAGES | PYTHON_LANGUAGES


@dataclass
class Expectation:
    line: int  # in the page
    status: int | None
    body: object = None
    has_body: bool = False


@dataclass
class ShellScript:
    """A shell block with its expected-answer comments turned into `__doc_expect N` calls."""

    text: str
    expectations: list[Expectation] = field(default_factory=list)


def parse_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    previous_text = ""  # the last non-blank line outside a block
    after_block = False  # nothing but blank lines since the last block closed
    while i < len(lines):
        line = lines[i]
        match = _FENCE.match(line)
        if not match:
            if line.strip():
                if _MARKER.match(line.strip()) and not _SKIP.match(line.strip()):
                    raise DocError(f"{path.name}:{i + 1}: unknown doctest marker {line.strip()!r}")
                previous_text = line.strip()
                after_block = False
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = (match["info"].split() or [""])[0].lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            text = lines[i]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            i += 1
        else:
            raise DocError(f"{path.name}:{start + 1}: the code block is never closed")
        i += 1
        text = "\n".join(body) + "\n"
        skip = _SKIP.match(previous_text)
        if skip and not skip["reason"]:
            raise DocError(f"{path.name}:{start + 1}: a doctest skip marker needs a reason")
        block = Block(path, start + 1, language, text, skip["reason"] if skip else None)
        if (
            language == "json"
            and after_block
            and blocks
            and blocks[-1].language in SHELL_LANGUAGES
            and blocks[-1].runs
        ):
            blocks[-1].answer_block, blocks[-1].answer_line = text, start + 1
        blocks.append(block)
        previous_text = ""
        after_block = True
    return blocks


def check_runnable(block: Block) -> None:
    """Refuse a block the runner cannot run and that carries no skip marker."""
    if block.skip_reason is not None:
        return
    if block.language in SHELL_LANGUAGES:
        for program in shell_programs(block.text):
            if program not in ALLOWED_PROGRAMS:
                raise DocError(
                    f"{block.where}: `{program}` cannot run against the test server; mark the "
                    "block with <!-- doctest: skip — <why> --> on the line before it"
                )
    elif block.language == "" and any(_COMMANDISH.match(line) for line in block.text.split("\n")):
        raise DocError(
            f"{block.where}: an untagged block that holds commands; tag it ```sh to run it "
            "or ```text if it shows output"
        )


def logical_lines(text: str) -> list[str]:
    """The shell's commands: lines joined across backslash continuations and open quotes,
    comments dropped."""
    commands, current, quote = [], "", None
    for raw in text.split("\n"):
        line = raw
        if quote is None and not current and line.lstrip().startswith("#"):
            continue
        out = []
        escaped = False
        for char in line:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "'":
                escaped = True
            elif quote:
                if char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char == "#" and (not out or out[-1] in " \t;|&"):
                break
            out.append(char)
        piece = "".join(out)
        if quote is not None:
            current += piece + "\n"
        elif piece.rstrip().endswith("\\") and not piece.rstrip().endswith("\\\\"):
            current += piece.rstrip()[:-1] + " "
        else:
            current += piece
            if current.strip():
                commands.append(current.strip())
            current = ""
    if current.strip():
        commands.append(current.strip())
    return commands


def shell_programs(text: str) -> list[str]:
    """The first word of every simple command of a shell block (a rough reading: enough to
    tell curl from make or docker)."""
    programs = []
    for command in logical_lines(text):
        unquoted = re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"", "''", command, flags=re.S)
        # A command substitution starts a command of its own.
        unquoted = re.sub(r"\$\(|`|[(){}]", " ; ", unquoted)
        for segment in re.split(r"\|\||&&|[|;&]", unquoted):
            words = segment.split()
            while words and _ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words and words[0] in PYTHONS and words[1:2] == ["manage.py"]:
                programs.append(" ".join(["manage.py", *words[2:3]]))
            elif words and words[0] != "!":
                programs.append(words[0])
    return programs


def shell_script(block: Block, tag: str = "0") -> ShellScript:
    """Turn the expected-answer comments of a shell block into `__doc_expect TAG.N` calls
    (N: the index in `expectations`), which the runner records with the number of curls
    made so far."""
    script = ShellScript(text="")
    lines = block.text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _EXPECT.match(lines[i])
        if not match or not (match["status"] or match["json"]):
            out.append(lines[i])
            i += 1
            continue
        line = block.line + 1 + i
        status = int(match["status"]) if match["status"] else None
        body_text = match["json"] or ""
        body, has_body = None, bool(body_text)
        while has_body:
            try:
                body = json.loads(body_text)
                break
            except json.JSONDecodeError as error:
                i += 1
                if i >= len(lines) or not lines[i].lstrip().startswith("#"):
                    raise DocError(
                        f"{block.path.name}:{line}: the expected answer is not JSON: {error}"
                    ) from None
                body_text += "\n" + lines[i].lstrip()[1:]
        script.expectations.append(Expectation(line, status, body, has_body))
        out.append(f"__doc_expect {tag}.{len(script.expectations) - 1}")
        i += 1
    if block.answer_block is not None:
        status, body_text = None, block.answer_block.strip()
        leading = re.match(r"^([1-5]\d\d)\s+", body_text)
        if leading:
            status, body_text = int(leading[1]), body_text[leading.end() :]
        try:
            body = json.loads(body_text)
        except json.JSONDecodeError as error:
            raise DocError(
                f"{block.path.name}:{block.answer_line}: the answer block is not JSON: {error}"
            ) from None
        script.expectations.append(Expectation(block.answer_line, status, body, True))
        out.append(f"__doc_expect {tag}.{len(script.expectations) - 1}")
    script.text = "\n".join(out) + "\n"
    return script


def mismatch(expected, actual, where: str = "$") -> str | None:
    """Where `actual` differs from `expected` (with the placeholders above), or None."""
    if expected == ELLIPSIS:
        return None
    if isinstance(expected, str) and expected.endswith(ELLIPSIS):
        if isinstance(actual, str) and actual.startswith(expected[:-1]):
            return None
        return f"{where}: expected a string starting with {expected[:-1]!r}, got {actual!r}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        open_ended = expected.get(ELLIPSIS) == ELLIPSIS
        keys = [key for key in expected if key != ELLIPSIS]
        missing = [key for key in keys if key not in actual]
        extra = [key for key in actual if key not in expected]
        if missing:
            return f"{where}: missing keys {missing} (got {sorted(actual)})"
        if extra and not open_ended:
            return f"{where}: unexpected keys {extra}"
        for key in keys:
            found = mismatch(expected[key], actual[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{where}: expected a list, got {actual!r}"
        open_ended = bool(expected) and expected[-1] == ELLIPSIS
        items = expected[:-1] if open_ended else expected
        if len(actual) < len(items) or (not open_ended and len(actual) != len(items)):
            return f"{where}: expected {len(items)} items, got {len(actual)}"
        for index, item in enumerate(items):
            found = mismatch(item, actual[index], f"{where}[{index}]")
            if found:
                return found
        return None
    if type(expected) is bool or type(actual) is bool or expected is None or actual is None:
        same = expected is actual
    elif isinstance(expected, int | float) and isinstance(actual, int | float):
        same = expected == actual
    else:
        same = type(expected) is type(actual) and expected == actual
    return None if same else f"{where}: expected {expected!r}, got {actual!r}"


def documents(root: Path) -> list[Path]:
    """The pages whose examples run: README.md and every docs/*.md, found afresh each run."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
