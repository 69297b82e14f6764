"""The front's floor (config/bench.py): a constant answer to `POST /bench/floor` in front of
the rest of Lab, for the benchmark's `floor` scenario; every other request goes on."""

import io

import orjson
import pytest

from config.bench import FLOOR_BODY, FrontFloor
from tests.conftest import requires_postgres


def _call(app, method: str, path: str, body: bytes = b""):
    answered = {}

    def start_response(status, headers):
        answered["status"], answered["headers"] = status, dict(headers)

    stream = io.BytesIO(body)
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": stream,
    }
    content = b"".join(app(environ, start_response))
    return answered, content, stream


def _lab(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "application/json")])
    return [b'{"detail": "lab"}']


def test_floor__post__constant_answer_of_a_decision_size_and_the_body_read():
    answered, content, stream = _call(FrontFloor(_lab), "POST", "/bench/floor", b'{"unit":"u"}')
    assert answered["status"] == "200 OK"
    assert content == FLOOR_BODY
    assert answered["headers"]["Content-Length"] == str(len(FLOOR_BODY))
    assert set(orjson.loads(content)["variants"]) == {"exp-a", "exp-b", "exp-c"}
    assert stream.read() == b""  # read as an application reads it


def test_floor__other_paths_and_methods__go_to_lab():
    for method, path in (("POST", "/api/v1/decide"), ("GET", "/bench/floor")):
        answered, content, _ = _call(FrontFloor(_lab), method, path)
        assert (answered["status"], content) == ("404 Not Found", b'{"detail": "lab"}')


@pytest.mark.django_db
def test_floor_read__one_statement_on_the_hot_path_cursor_then_the_constant(
    django_assert_num_queries,
):
    # Recorded here (a test counting queries goes through Django's cursor): exactly one
    # statement, the floor's, whatever the body holds
    with django_assert_num_queries(1) as captured:
        answered, content, stream = _call(
            FrontFloor(_lab), "POST", "/bench/floor-read", b'{"unit":"u-\x00\xff"}'
        )
    assert answered["status"] == "200 OK"
    assert content == FLOOR_BODY
    assert stream.read() == b""
    assert captured.captured_queries[0]["sql"].startswith("SELECT")


@pytest.mark.django_db(transaction=True)
def test_floor_read__on_postgresql__reads_on_the_hot_path_cursor():
    from django.db import connection

    requires_postgres()
    answered, content, _ = _call(FrontFloor(_lab), "POST", "/bench/floor-read", b'{"unit":"u"}')
    assert (answered["status"], content) == ("200 OK", FLOOR_BODY)
    kept = connection._lab_hot_cursor
    assert kept.connection is connection.connection
    assert kept.fetchall() == []  # its one statement's row already read


def test_floor_read__a_get__goes_to_lab():
    answered, content, _ = _call(FrontFloor(_lab), "GET", "/bench/floor-read")
    assert (answered["status"], content) == ("404 Not Found", b'{"detail": "lab"}')
