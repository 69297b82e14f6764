"""Malformed and forged credentials against real gunicorn on PostgreSQL, with the memory of
known units on (its default there): every answer is the one 401, whether a worker remembers
the unit or not, through the hot path and without it, and nothing is logged as an error
(docs/decide.md, "Authentication").

The headers are sent as raw bytes (`é` as its two UTF-8 bytes), which gunicorn hands to Lab
decoded as latin-1, as any WSGI server does.
"""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Server, gunicorn

pytestmark = pytest.mark.e2e

UNAUTHORIZED = (401, b'{"detail":"missing or invalid bearer credentials"}', "Bearer")
REMEMBERED, UNKNOWN = "cred-remembered", "cred-never-decided"
ROUTES = {
    "decide": ("/api/v1/decide", lambda unit: {"unit": unit}),
    "batch": ("/api/v1/decide/batch", lambda unit: {"units": [unit]}),
    "ofrep-single": (
        "/ofrep/v1/evaluate/flags/etch",
        lambda unit: {"context": {"targetingKey": unit}},
    ),
    "ofrep-bulk": ("/ofrep/v1/evaluate/flags", lambda unit: {"context": {"targetingKey": unit}}),
}
REPEATS = 4  # each request on a new connection, so on any of the workers


def _prefix(secret: str) -> bytes:
    return secret.split("_")[1].encode()


def _tails() -> dict[str, bytes]:
    return {
        "e-acute": "é".encode(),
        "utf-8 of secret length": ("é" * 21 + "x").encode(),  # 43 characters as latin-1
        "high bytes": bytes(range(0x80, 0x80 + 43)),
        "wrong secret": b"x" * 43,  # well-formed: only the database can refuse it
        "long": b"x" * 4000,
    }


def _answer(server: Server, route: str, unit: str, headers: dict[str, bytes]) -> tuple:
    path, body = ROUTES[route]
    response = requests.post(server.url(path), json=body(unit), headers=headers, timeout=30)
    return response.status_code, response.content, response.headers.get("WWW-Authenticate")


@pytest.fixture
def hot_path_off(server) -> Iterator[Server]:
    """A second gunicorn on the same database with DECIDE_HOT_PATH=false."""
    folder = Path(tempfile.mkdtemp(prefix="lab-e2e-credentials-"))
    try:
        with gunicorn({**server.env, "DECIDE_HOT_PATH": "false"}, folder, server.vendor) as off:
            yield off
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remember(server: Server, key: str) -> None:
    """Decide REMEMBERED until every worker has answered it from memory at least once."""
    hit = ("lab_known_units_total", (("result", "hit"),))
    before = server.metrics().get(hit, 0.0)
    for _ in range(10 * server.workers):
        server.decide(key, REMEMBERED)
    assert server.metrics().get(hit, 0.0) > before, "the unit was never answered from memory"


def _log_errors(server: Server, offset: int) -> list[str]:
    text = server.log_path.read_bytes()[offset:].decode(errors="replace")
    return [
        line
        for line in text.splitlines()
        if '"level":"ERROR"' in line or "[ERROR]" in line or "Traceback" in line
    ]


def test_malformed_or_forged_key__one_401_remembered_or_not_hot_path_or_not(
    server, hot_path_off, seeded
):
    if server.vendor != "postgresql":
        pytest.skip("the memory of known units is PostgreSQL only (LISTEN/NOTIFY)")
    key = seeded["client_key"]
    offsets = {}
    answers: dict[tuple, set] = {}
    for running in (server, hot_path_off):
        _remember(running, key)
        offsets[running.base_url] = running.log_path.stat().st_size
        for name, tail in _tails().items():
            token = b"lck_" + _prefix(key) + b"_" + tail
            for route in ROUTES:
                headers = [{"Authorization": b"Bearer " + token}]
                if route.startswith("ofrep"):
                    headers.append({"X-API-Key": token})
                for header in headers:
                    for unit in (REMEMBERED, UNKNOWN):
                        for _ in range(REPEATS):
                            case = (name, route, next(iter(header)), unit, running.base_url)
                            answers.setdefault(case, set()).add(
                                _answer(running, route, unit, header)
                            )

    wrong = {case: found for case, found in answers.items() if found != {UNAUTHORIZED}}
    assert not wrong, wrong
    for running in (server, hot_path_off):
        assert _log_errors(running, offsets[running.base_url]) == []
    # The control: the real key still answers, for the remembered unit too
    for running in (server, hot_path_off):
        assert _answer(running, "decide", REMEMBERED, {"Authorization": f"Bearer {key}"})[0] == 200


def test_control_character_in_a_key__refused_by_gunicorn_the_same_remembered_or_not(server, seeded):
    # gunicorn refuses a header holding a control character (RFC 9110) before Lab reads it:
    # a 400 of its own, whatever is remembered.
    key = seeded["client_key"]
    if server.vendor == "postgresql":  # the memory of known units is PostgreSQL only
        _remember(server, key)
    offset = server.log_path.stat().st_size
    header = {"Authorization": b"Bearer lck_" + _prefix(key) + b"_\x01" + b"x" * 42}
    seen = {
        unit: {_answer(server, "decide", unit, header)[:2] for _ in range(REPEATS)}
        for unit in (REMEMBERED, UNKNOWN)
    }
    assert seen[REMEMBERED] == seen[UNKNOWN] and len(seen[REMEMBERED]) == 1, seen
    assert next(iter(seen[REMEMBERED]))[0] in (400, 401)
    assert _log_errors(server, offset) == []


def test_admin_api__malformed_token_with_a_real_prefix__401(server, seeded):
    token = seeded["api_token"]
    offset = server.log_path.stat().st_size
    for tail in _tails().values():
        forged = b"Bearer lab_" + _prefix(token) + b"_" + tail
        response = requests.get(
            server.url("/api/admin/v1/products"), headers={"Authorization": forged}, timeout=30
        )
        answer = response.status_code, response.content, response.headers.get("WWW-Authenticate")
        assert answer == UNAUTHORIZED
    assert _log_errors(server, offset) == []
