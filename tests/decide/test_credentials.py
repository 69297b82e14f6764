"""Any malformed client key is a 401 with one body, on every decide route, whatever a worker
remembers (docs/decide.md, "Authentication").

The requests are raw WSGI environs, as gunicorn hands them to Lab: a header is a str holding
the bytes received, decoded as latin-1, so any byte can appear in it. They go through the
whole production stack (config.wsgi: the hot path in front of Django). PostgreSQL only, committed
for real (transactional): the memory of known units is kept fresh by notifications.
"""

import io
import itertools
import json
import sys

import pytest
from django.core.handlers.wsgi import WSGIHandler
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from decide.hot_path import DecideHotPath
from tests.contract.ofrep_schema import problems
from tests.decide.conftest import make_experiment, remember

pytestmark = pytest.mark.django_db(transaction=True)

UNAUTHORIZED = (b'{"detail":"missing or invalid bearer credentials"}', "Bearer")
UNIT = "SN-1"
NEW_UNIT = "SN-NEVER-SEEN"

# Every route a client key opens, with a good body for `unit`.
ROUTES = {
    "decide": ("/api/v1/decide", lambda unit: {"unit": unit}),
    "batch": ("/api/v1/decide/batch", lambda unit: {"units": [unit, "SN-2"]}),
    "ofrep-single": (
        "/ofrep/v1/evaluate/flags/etch",
        lambda unit: {"context": {"targetingKey": unit}},
    ),
    "ofrep-bulk": ("/ofrep/v1/evaluate/flags", lambda unit: {"context": {"targetingKey": unit}}),
}
OFREP = {"ofrep-single": "single", "ofrep-bulk": "bulk"}
# A header value as a WSGI server gives it: the bytes received, decoded as latin-1.
header_bytes = st.binary(max_size=200).map(lambda raw: raw.decode("latin-1"))
# Characters that are no part of a key: non-ASCII (as latin-1 and beyond), controls, NUL.
foreign = st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(
    lambda c: not (c.isascii() and (c.isalnum() or c in "-_"))
)
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _environ(path: str, body: dict, headers: dict[str, str]) -> dict:
    data = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    environ.update(headers)
    return environ


def _send(route: str, unit: str, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
    """Status, body and WWW-Authenticate of one request through the production stack."""
    path, body = ROUTES[route]
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"], started["headers"] = status, dict(response_headers)

    result = DecideHotPath(WSGIHandler())(_environ(path, body(unit), headers), start_response)
    try:
        content = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status = int(started["status"].split()[0])
    return status, content, started["headers"].get("WWW-Authenticate")


def _assert_unauthorized(route: str, answer: tuple[int, bytes, str | None]) -> None:
    status, content, challenge = answer
    assert status == 401, (route, status, content[:300])
    assert (content, challenge) == UNAUTHORIZED, route
    if route in OFREP:
        assert problems(OFREP[route], status, json.loads(content)) == []


@pytest.fixture
def remembered(memory, decider):
    """A unit this worker remembers (its assignments stored, then read) under the key."""
    make_experiment(decider.product, "etch")
    decider.decide(UNIT)  # stores
    remember(memory, decider, UNIT)  # read, remembered
    assert len(memory) == 1
    return decider


def _prefix(secret: str) -> str:
    return secret.split("_")[1]


# (the fourth: 43 characters once its UTF-8 bytes are read as latin-1, the length of a secret)
MALFORMED_TAILS = [
    "é",
    "é" * 43,
    "é" * 21 + "x",
    "\x00",
    "x" * 42 + "\x7f",
    "x" * 43 + "\n",
    "x" * 10_000,
    "",
]


def test_real_prefix_malformed_secret__401_same_body_remembered_or_not(remembered):
    for tail in MALFORMED_TAILS:
        # Given a key with the real key's prefix and a malformed secret (as a WSGI server
        # passes it: UTF-8 bytes read as latin-1)
        token = f"lck_{_prefix(remembered.secret)}_{tail}".encode().decode("latin-1")
        for route in ROUTES:
            for unit in (UNIT, NEW_UNIT):
                # When it is sent for the remembered unit or an unknown one, in either header
                answers = [_send(route, unit, {"HTTP_AUTHORIZATION": f"Bearer {token}"})]
                if route in OFREP:
                    answers.append(_send(route, unit, {"HTTP_X_API_KEY": token}))
                # Then every answer is the one 401
                for answer in answers:
                    _assert_unauthorized(route, answer)


def test_real_prefix_wrong_secret__401_same_body_remembered_or_not(remembered):
    # A well-formed key that is not the real one: only the database can say so.
    forged = f"lck_{_prefix(remembered.secret)}_{'x' * 43}"
    for route, unit in itertools.product(ROUTES, (UNIT, NEW_UNIT)):
        _assert_unauthorized(route, _send(route, unit, {"HTTP_AUTHORIZATION": f"Bearer {forged}"}))
        if route in OFREP:
            _assert_unauthorized(route, _send(route, unit, {"HTTP_X_API_KEY": forged}))


@SETTINGS
@given(value=header_bytes, unit=st.sampled_from([UNIT, NEW_UNIT]))
@example(value="Bearer", unit=UNIT)
@example(value="Bearer ", unit=UNIT)
@example(value="bearer lck_0123456789ab_" + "x" * 43, unit=UNIT)
@example(value="Bearer\tlck_0123456789ab_" + "x" * 43, unit=UNIT)
@example(value="Basic dXNlcjpwYXNz", unit=UNIT)
@example(value="Bearer lck_" + "\x00" * 12 + "_" + "x" * 43, unit=UNIT)
def test_any_authorization_bytes__401_same_body(remembered, value, unit):
    assume(remembered.secret not in value)
    for route in ROUTES:
        _assert_unauthorized(route, _send(route, unit, {"HTTP_AUTHORIZATION": value}))


@SETTINGS
@given(
    tail=st.one_of(header_bytes, st.text(foreign, min_size=1, max_size=60)),
    scheme=st.sampled_from(["Bearer ", "bearer ", "BEARER ", "Bearer  ", ""]),
    unit=st.sampled_from([UNIT, NEW_UNIT]),
)
def test_real_prefix_any_tail__401_same_body(remembered, tail, scheme, unit):
    # The real key's prefix with anything after it: the memory is asked only for a key of
    # the right syntax, and the syntax is ASCII of a fixed length.
    token = f"lck_{_prefix(remembered.secret)}_{tail}"
    assume(token != remembered.secret)
    for route in ROUTES:
        _assert_unauthorized(route, _send(route, unit, {"HTTP_AUTHORIZATION": scheme + token}))


@SETTINGS
@given(
    key=st.one_of(header_bytes, st.builds(lambda t: f"lck_{t}", header_bytes)),
    route=st.sampled_from(list(OFREP)),
    unit=st.sampled_from([UNIT, NEW_UNIT]),
)
@example(key="lck_" + "\x00" * 12 + "_" + "x" * 43, route="ofrep-bulk", unit=UNIT)
@example(key="lck_{prefix}_\xc3\xa9", route="ofrep-single", unit=UNIT)
def test_ofrep_any_api_key_bytes__401_in_its_shape(remembered, key, route, unit):
    key = key.replace("{prefix}", _prefix(remembered.secret))
    assume(remembered.secret not in key)
    _assert_unauthorized(route, _send(route, unit, {"HTTP_X_API_KEY": key}))


@SETTINGS
@given(position=st.integers(0, 59), replacement=foreign)
def test_real_key_one_character_replaced__401(remembered, position, replacement):
    # Given the real key with one character replaced by a foreign one (UTF-8 read as latin-1)
    secret = remembered.secret
    token = (secret[:position] + replacement + secret[position + 1 :]).encode()
    # Then it is refused, as any malformed key, for the unit the worker remembers
    header = {"HTTP_AUTHORIZATION": "Bearer " + token.decode("latin-1")}
    for route in ROUTES:
        _assert_unauthorized(route, _send(route, UNIT, header))


def test_bearer_scheme__any_case_then_exactly_one_space(remembered):
    key = remembered.secret
    for accepted in (f"bearer {key}", f"BEARER {key}"):
        assert _send("decide", UNIT, {"HTTP_AUTHORIZATION": accepted})[0] == 200
    for refused in (f"Bearer  {key}", f"Bearer\t{key}", f"Bearer {key} ", key):
        _assert_unauthorized("decide", _send("decide", UNIT, {"HTTP_AUTHORIZATION": refused}))


def test_real_key__still_answers(remembered):
    # The control: the same requests with the real key are answered.
    for route in ROUTES:
        status, content, _ = _send(
            route, UNIT, {"HTTP_AUTHORIZATION": f"Bearer {remembered.secret}"}
        )
        assert status == 200, (route, content)
        if route in OFREP:
            status, _, _ = _send(route, UNIT, {"HTTP_X_API_KEY": remembered.secret})
            assert status == 200
