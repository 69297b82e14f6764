"""The doc-example runner itself: it must refuse what it cannot run and catch wrong answers,
or a passing run of the pages would prove nothing."""

from pathlib import Path

import pytest

from tests.docs.doc_examples import (
    DocError,
    check_runnable,
    documents,
    mismatch,
    parse_blocks,
    shell_programs,
    shell_script,
)
from tests.docs.test_doc_examples import ROOT, run_page


def page(tmp_path: Path, text: str, name: str = "selftest.md") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_documents__finds_readme_and_every_docs_page():
    found = {path.relative_to(ROOT).as_posix() for path in documents(ROOT)}
    assert "README.md" in found
    assert {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")} <= found


@pytest.mark.parametrize("path", documents(ROOT), ids=lambda path: path.name)
def test_page__every_block__can_run_or_says_why_not(path):
    # Fast, without a server: the live run (test_doc_examples.py) checks the answers.
    for block in parse_blocks(path):
        check_runnable(block)


@pytest.mark.parametrize(
    "command",
    [
        "make serve",
        "pip install lab",
        "docker run lab",
        "gunicorn x",
        "python -m x",
        "python manage.py runserver",
    ],
)
def test_unmarked_block__that_cannot_run__is_refused(tmp_path, command):
    (block,) = parse_blocks(page(tmp_path, f"Text.\n\n```sh\n{command}\n```\n"))
    with pytest.raises(DocError, match="doctest: skip"):
        check_runnable(block)


def test_marked_block__is_skipped_with_its_reason(tmp_path):
    text = "<!-- doctest: skip — starts a server -->\n```sh\nmake serve\n```\n"
    (block,) = parse_blocks(page(tmp_path, text))
    check_runnable(block)
    assert block.skip_reason == "starts a server"
    assert not block.runs


def test_marker_without_reason__is_refused(tmp_path):
    with pytest.raises(DocError, match="needs a reason"):
        parse_blocks(page(tmp_path, "<!-- doctest: skip -->\n```sh\nmake serve\n```\n"))


def test_untagged_block_of_commands__is_refused(tmp_path):
    (block,) = parse_blocks(page(tmp_path, "```\ncurl -s $LAB/healthz\n```\n"))
    with pytest.raises(DocError, match="untagged"):
        check_runnable(block)


def test_programs__of_pipes_substitutions_and_continuations():
    text = (
        "KEY=$(curl -s -X POST $LAB/x \\\n  -d '{\"a\": \"b; make\"}' | python3 -c 'x')\n"
        "curl -s $LAB | jq . && echo ok  # make a comment\n"
    )
    assert shell_programs(text) == ["curl", "python3", "curl", "jq", "echo"]
    managed = "python manage.py create_api_token alice | tail -n 1\npython manage.py runserver\n"
    assert shell_programs(managed) == ["manage.py create_api_token", "tail", "manage.py runserver"]


def test_expected_answers__comment_status_and_following_json_block(tmp_path):
    text = (
        '```sh\ncurl -s a\n# {"a": 1,\n#  "b": [1, "…"]}\ncurl -s b\n# 404 {"detail": "…"}\n'
        "curl -s c\n# 204\n# A comment that is prose.\ncurl -s d\n```\n\n```json\n[1, 2]\n```\n"
    )
    blocks = parse_blocks(page(tmp_path, text))
    script = shell_script(blocks[0], tag="7")
    assert [(e.status, e.body) for e in script.expectations] == [
        (None, {"a": 1, "b": [1, "…"]}),
        (404, {"detail": "…"}),
        (204, None),
        (None, [1, 2]),
    ]
    assert script.text.count("__doc_expect 7.") == 4
    assert "# A comment that is prose." in script.text


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ({"a": "…"}, {"a": {"deep": 1}}, True),
        ({"a": "lck_…"}, {"a": "lck_123"}, True),
        ({"a": "lck_…"}, {"a": "lab_123"}, False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1, "…": "…"}, {"a": 1, "b": 2}, True),
        ({"a": 1, "b": 2}, {"a": 1}, False),
        ([1, "…"], [1, 2, 3], True),
        ([1, 2], [1, 2, 3], False),
        ({"a": None}, {"a": False}, False),
        ({"a": 1.0}, {"a": 1}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": "long"}, {"a": "short"}, False),
    ],
)
def test_mismatch__placeholders(expected, actual, matches):
    assert (mismatch(expected, actual) is None) is matches


@pytest.mark.e2e
def test_run_page__wrong_answer_and_wrong_status__are_reported(docs_server, tmp_path):
    text = (
        "```sh\nJSON='Content-Type: application/json'\n"
        'curl -s -X POST $LAB/api/v1/decide -H "Authorization: Bearer '
        '$LAB_CLIENT_KEY" -H "$JSON" -d \'{"unit": "SN-0001"}\'\n'
        '# {"unit": "SN-0001", "variants": {"etch-time": "short", "…": "…"}}\n'
        'curl -s $LAB/api/admin/v1/products/nope -H "Authorization: Bearer '
        '$TOKEN"\n'
        'curl -s $LAB/api/admin/v1/products/demo-widget -H "Authorization: '
        'Bearer $TOKEN"\n# 404\n```\n'
    )
    folder = tmp_path / "run"
    folder.mkdir()
    problems = run_page(docs_server, page(tmp_path, text, "runner-wrong.md"), folder)
    assert len(problems) == 3, problems
    assert "$.variants.etch-time: expected 'short', got 'long'" in problems[0]
    assert "answered 404" in problems[1]
    assert "answered 200, the page shows 404" in problems[2]


@pytest.mark.e2e
def test_run_page__right_answers__pass_and_a_failing_command_is_reported(docs_server, tmp_path):
    good = (
        "```sh\ncurl -s $LAB/api/admin/v1/products/demo-widget "
        '-H "Authorization: Bearer $TOKEN"\n'
        '# {"key": "demo-widget", "name": "Demo widget", "status": "enabled", '
        '"created_at": "…"}\n```\n'
    )
    folder = tmp_path / "good"
    folder.mkdir()
    assert run_page(docs_server, page(tmp_path, good, "runner-good.md"), folder) == []
    failing = "```sh\ncurl -s $LAB/healthz | python3 -c 'raise SystemExit(3)'\n```\n"
    folder = tmp_path / "failing"
    folder.mkdir()
    problems = run_page(docs_server, page(tmp_path, failing, "runner-failing.md"), folder)
    assert len(problems) == 1 and "the block failed (exit 3)" in problems[0], problems


@pytest.mark.e2e
def test_run_page__management_command__runs_against_the_server_database(docs_server, tmp_path):
    # A CSV written by the example, imported with the command a reader would type
    text = (
        "```sh\nprintf 'unit,metric,value\\nSN-9,thickness,1.01\\n' > lot.csv\n"
        ".venv/bin/python manage.py import_measurements lot.csv --product demo-widget "
        "--user doc-runner-manage --no-progress\n"
        'curl -s "$LAB/api/admin/v1/products/demo-widget/measurements'
        '?unit=SN-9" -H "Authorization: Bearer $TOKEN"\n'
        '# {"items": [{"metric": "thickness", "unit": "SN-9", "value": 1.01, "…": "…"}], '
        '"count": 1, "replica_lag_seconds": 0.0}\n```\n'
    )
    folder = tmp_path / "run"
    folder.mkdir()
    assert run_page(docs_server, page(tmp_path, text, "runner-manage.md"), folder) == []


@pytest.mark.e2e
def test_run_page__address_written_out__reported_not_rewritten(docs_server, tmp_path):
    # Given an example that names the default port instead of $LAB (the server runs on
    # another one)
    text = "```sh\ncurl -s http://127.0.0.1:8000/healthz\n```\n"
    folder = tmp_path / "run"
    folder.mkdir()
    problems = run_page(docs_server, page(tmp_path, text, "runner-address.md"), folder)
    # Then the page is refused, not run against a rewritten address
    assert problems == ["runner-address.md:1: an address written out where $LAB belongs"]
