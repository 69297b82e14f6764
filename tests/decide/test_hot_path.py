"""The decide hot path (decide/hot_path.py): known units answered in front of Django, from
the worker's memory or from the database's one read.

Why this module is long: it is one differential table, the hot path against Django, and
each case (memory, the database's read, the 503, the hand-over to Django) is read
against the same helpers.

Every test sends the same WSGI request twice: through the hot path, and straight to Django's
handler. The hot path must either answer it itself exactly as Django does (status, headers,
body), or hand it to Django untouched. PostgreSQL only, committed for real (transactional):
the memory of known units is kept fresh by notifications sent at commit.
"""

import io
import json
import logging
import sys

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import OperationalError, ProgrammingError

from decide import memory as decide_memory
from decide import metrics
from decide.hot_path import DecideHotPath
from lab.services.credentials import client_key_revoke
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST_ID = "hot-path-test-1"


class _Recorder:
    """Django's WSGI handler, noting whether a request reached it."""

    def __init__(self):
        self.django = WSGIHandler()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.django(environ, start_response)


def _environ(body, *, secret=None, raw: bytes | None = None, **extra) -> dict:
    data = raw if raw is not None else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/decide",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(data)),
        "HTTP_X_REQUEST_ID": REQUEST_ID,
        "wsgi.input": io.BytesIO(data),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if secret:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    environ.update(extra)
    return {name: value for name, value in environ.items() if value is not None}


def _call(application, environ) -> tuple[str, list, bytes]:
    started = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, headers

    result = application(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], list(started["headers"]), body


def _both(body, **request) -> tuple[tuple, tuple, _Recorder]:
    """The answer of the hot path and Django's, to the same request; the recorder says
    whether the hot path handed it to Django."""
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ(body, **request))
    django = _call(WSGIHandler(), _environ(body, **request))
    return hot, django, recorder


def test_known_unit__answered_in_front_of_django_exactly_as_django_answers(
    known_unit, decider, django_assert_num_queries
):
    recorder = _Recorder()
    with django_assert_num_queries(0):
        hot = _call(DecideHotPath(recorder), _environ({"unit": known_unit}, secret=decider.secret))
    django = _call(WSGIHandler(), _environ({"unit": known_unit}, secret=decider.secret))
    assert recorder.calls == 0
    assert hot == django
    status, headers, body = hot
    assert status == "200 OK"
    assert ("X-Request-ID", REQUEST_ID) in headers
    assert json.loads(body) == {"unit": "SN-1", "variants": decider.decide("SN-1")}


@pytest.mark.parametrize(
    "body",
    [
        {"unit": "SN-1", "experiments": ["dope", "etch", "nope"]},
        {"unit": "SN-1", "step": "nowhere"},
        {"unit": "SN-1", "attributes": {"line": "A"}},
    ],
    ids=["experiments", "step", "attributes"],
)
def test_known_unit_with_filters__same_answer_as_django(known_unit, decider, body):
    hot, django, recorder = _both(body, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django


def test_caller_without_request_id__gets_a_fresh_one(known_unit, decider):
    recorder = _Recorder()
    status, headers, _ = _call(
        DecideHotPath(recorder),
        _environ({"unit": known_unit}, secret=decider.secret, HTTP_X_REQUEST_ID=None),
    )
    assert (recorder.calls, status) == (0, "200 OK")
    request_id = dict(headers)["X-Request-ID"]
    assert len(request_id) == 32 and request_id != REQUEST_ID


def test_hot_answer__counted_timed_and_logged_like_djangos(known_unit, decider, caplog):
    ok = metrics.decide_requests.labels("decide", "ok")
    hits = metrics.known_hit._value.get()
    before = ok._value.get()
    recorder = _Recorder()
    with caplog.at_level(logging.INFO, logger="lab.access"):
        _call(DecideHotPath(recorder), _environ({"unit": known_unit}, secret=decider.secret))
    assert recorder.calls == 0
    assert ok._value.get() == before + 1
    assert metrics.known_hit._value.get() == hits + 1
    (line,) = [r for r in caplog.records if r.name == "lab.access"]
    assert (line.method, line.path, line.status) == ("POST", "/api/v1/decide", 200)


def test_secure_request_with_hsts__same_headers_as_django(known_unit, decider, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    hot, django, recorder = _both(
        {"unit": known_unit}, secret=decider.secret, **{"wsgi.url_scheme": "https"}
    )
    assert recorder.calls == 0
    assert hot == django
    assert ("Strict-Transport-Security", "max-age=3600; includeSubDomains") in hot[1]


# --- Everything else reaches Django, body intact, and gets Django's answer.


def _forged(secret: str) -> str:
    prefix = secret.split("_")[1]
    return f"lck_{prefix}_{'x' * 43}"


@pytest.mark.parametrize(
    ("body", "request_args", "status"),
    [
        ({"unit": "SN-1"}, {"raw": b'{"unit": "SN-1", "unit": "SN-2"}'}, "400 Bad Request"),
        ({"unit": "SN-1"}, {"raw": b'{"unit": '}, "400 Bad Request"),
        (
            {"unit": "SN-1"},
            {"raw": b'{"unit": "SN-1", "attributes": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}"},
            "400 Bad Request",
        ),
        ({"unit": "SN-1", "colour": "red"}, {}, "422 Unprocessable Entity"),
        ({"unit": ""}, {}, "422 Unprocessable Entity"),
        ({"unit": "SN-1"}, {"CONTENT_TYPE": "text/plain"}, "415 Unsupported Media Type"),
        ({"unit": "SN-1"}, {"secret": "forged"}, "401 Unauthorized"),
        ({"unit": "SN-1"}, {"secret": "lck_malformed"}, "401 Unauthorized"),
        ({"unit": "SN-1"}, {"HTTP_AUTHORIZATION": None}, "401 Unauthorized"),
        ({"unit": "SN-1"}, {"HTTP_HOST": "evil.example"}, "400 Bad Request"),
        ({"unit": "SN-1"}, {"HTTP_ORIGIN": "https://app.example"}, "200 OK"),
        ({"unit": "SN-1"}, {"QUERY_STRING": "x=1", "PATH_INFO": "/api/v1/decide/"}, None),
    ],
    ids=[
        "duplicate-key",
        "not-json",
        "nested-too-deeply",
        "unknown-field",
        "empty-unit",
        "not-json-content-type",
        "forged-secret",
        "malformed-key",
        "no-key",
        "host-not-allowed",
        "cors-origin",
        "other-path",
    ],
)
def test_anything_else__handed_to_django_untouched(
    known_unit, decider, settings, body, request_args, status
):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    args = dict(request_args)
    if args.get("secret") == "forged":
        args["secret"] = _forged(decider.secret)
    else:
        args.setdefault("secret", decider.secret)
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ(body, **args))
    assert recorder.calls == 1
    if status is not None:
        assert hot[0] == status, hot
    # Django answers the same again (same request id)
    django = _call(WSGIHandler(), _environ(body, **args))
    assert (hot[0], hot[2]) == (django[0], django[2])
    assert hot[1] == django[1]


def test_oversized_body__to_django(known_unit, decider):
    padding = "x" * 20_000
    body = {"unit": known_unit, "attributes": {"note": padding}}
    hot, django, recorder = _both(body, secret=decider.secret)
    assert recorder.calls == 1
    assert hot == django


def test_ssl_redirect_on__plain_http_to_django(known_unit, decider, settings):
    settings.SECURE_SSL_REDIRECT = True
    hot, django, recorder = _both({"unit": known_unit}, secret=decider.secret)
    assert recorder.calls == 1
    assert hot == django
    assert hot[0].startswith("301")


def test_revoked_key__next_decision_is_401(known_unit, decider, memory):
    key = decider.product.client_keys.get()
    client_key_revoke(product=decider.product, key_id=key.id)
    wait_until(lambda: len(memory) == 0)
    hot, _, recorder = _both({"unit": known_unit}, secret=decider.secret)
    assert recorder.calls == 1
    assert hot[0] == "401 Unauthorized"


def test_another_middleware_list__everything_to_django(known_unit, decider, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    recorder = _Recorder()
    _call(DecideHotPath(recorder), _environ({"unit": known_unit}, secret=decider.secret))
    assert recorder.calls == 1


def test_switched_off__everything_to_django(known_unit, decider, settings):
    settings.DECIDE_HOT_PATH = False
    recorder = _Recorder()
    _call(DecideHotPath(recorder), _environ({"unit": known_unit}, secret=decider.secret))
    assert recorder.calls == 1


def test_defect_in_the_hot_path__django_answers_and_it_is_logged(
    known_unit, decider, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("a defect")

    monkeypatch.setattr("decide.decisions.decide_if_read", broken)
    recorder = _Recorder()
    with caplog.at_level(logging.ERROR, logger="decide.hot_path"):
        status, _, body = _call(
            DecideHotPath(recorder), _environ({"unit": known_unit}, secret=decider.secret)
        )
    assert recorder.calls == 1
    assert status == "200 OK"
    assert json.loads(body)["variants"] == decider.decide(known_unit)
    assert any("hot path failed" in r.getMessage() for r in caplog.records)


# --- Known units that memory does not hold: answered from the database's one read.


@pytest.fixture
def stored_unit(decider, settings):
    """A unit with stored assignments in three experiments; no memory of known units."""
    settings.DECIDE_KNOWN_UNITS = False
    decide_memory.reset()
    for key in ("etch", "anneal", "dope"):
        make_experiment(decider.product, key)
    decider.decide("SN-1")  # stores
    return "SN-1"


def test_memory_off__stored_unit_answered_from_one_read_as_django_answers(
    stored_unit, decider, django_assert_num_queries
):
    ok = metrics.decide_requests.labels("decide", "ok")
    before = ok._value.get()
    recorder = _Recorder()
    with django_assert_num_queries(1):
        hot = _call(DecideHotPath(recorder), _environ({"unit": stored_unit}, secret=decider.secret))
    assert recorder.calls == 0
    assert ok._value.get() == before + 1
    assert hot == _call(WSGIHandler(), _environ({"unit": stored_unit}, secret=decider.secret))
    assert json.loads(hot[2])["variants"] == decider.decide(stored_unit)


def test_memory_empty__stored_unit_answered_from_the_database_then_remembered(
    memory, decider, caplog
):
    for key in ("etch", "anneal", "dope"):
        make_experiment(decider.product, key)
    decider.decide("SN-1")  # stores
    decider.decide("SN-1")
    wait_until(lambda: len(memory) == 1)  # learnt from its write's notification, or read
    memory.apply(["*"])  # as after anything that empties the memory
    misses, hits = metrics.known_miss._value.get(), metrics.known_hit._value.get()
    recorder = _Recorder()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lab.access"):
        hot = _call(DecideHotPath(recorder), _environ({"unit": "SN-1"}, secret=decider.secret))
    assert recorder.calls == 0
    assert metrics.known_miss._value.get() == misses + 1
    assert metrics.known_hit._value.get() == hits
    (line,) = [r for r in caplog.records if r.name == "lab.access"]
    assert (line.method, line.path, line.status) == ("POST", "/api/v1/decide", 200)
    assert len(memory) == 1
    assert hot == _call(WSGIHandler(), _environ({"unit": "SN-1"}, secret=decider.secret))


@pytest.mark.parametrize(
    "body",
    [
        {"unit": "SN-1"},
        {"unit": "SN-1", "experiments": ["dope", "etch", "nope"]},
        {"unit": "SN-1", "attributes": {"line": "A"}},
    ],
    ids=["all", "experiments", "attributes"],
)
def test_memory_off__filters__same_answer_as_django(stored_unit, decider, body):
    hot, django, recorder = _both(body, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django


def test_memory_off__product_disabled__null_answers_from_the_hot_path(stored_unit, decider):
    decider.change(decider.product, status="disabled")
    hot, django, recorder = _both({"unit": stored_unit}, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django
    assert set(json.loads(hot[2])["variants"].values()) == {None}


def test_memory_off__paused_experiment__same_answer_as_django(stored_unit, decider):
    etch = decider.product.experiments.get(key="etch")
    decider.change(etch, status="disabled")
    hot, django, recorder = _both(
        {"unit": stored_unit, "experiments": ["etch", "dope"]}, secret=decider.secret
    )
    assert recorder.calls == 0
    assert hot == django
    assert json.loads(hot[2])["variants"]["etch"] is None


def test_memory_off__unit_without_a_row_and_nothing_to_store__answered(stored_unit, decider):
    for experiment in decider.product.experiments.all():
        decider.change(experiment, status="disabled")
    hot, django, recorder = _both({"unit": "SN-NEVER"}, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django
    assert not decider.product.units.filter(key="SN-NEVER").exists()


def test_memory_off__unit_needing_a_write__stored_by_the_hot_path(stored_unit, decider):
    make_experiment(decider.product, "bake")
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ({"unit": stored_unit}, secret=decider.secret))
    assert recorder.calls == 0
    assert hot[0] == "200 OK"
    assert json.loads(hot[2])["variants"]["bake"] in {"a", "b"}
    assert decider.product.units.get(key=stored_unit).assignments.count() == 4
    # Django, asked the same now, reads what the hot path stored: the same answer
    assert hot == _call(WSGIHandler(), _environ({"unit": stored_unit}, secret=decider.secret))


def test_new_unit__stored_by_the_hot_path_exactly_as_django_answers(known_unit, decider):
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ({"unit": "SN-NEW"}, secret=decider.secret))
    assert recorder.calls == 0
    assert hot[0] == "200 OK"
    unit = decider.product.units.get(key="SN-NEW")
    stored = {a.experiment.key: a.variant.key for a in unit.assignments.all()}
    assert json.loads(hot[2])["variants"] == stored
    assert set(stored) == {"etch", "anneal", "dope"}
    assert hot == _call(WSGIHandler(), _environ({"unit": "SN-NEW"}, secret=decider.secret))


@pytest.mark.parametrize("endpoint", ["decide", "ofrep"])
def test_store_failing_otherwise__django_decides_again_and_answers(
    stored_unit, decider, monkeypatch, caplog, endpoint
):
    """A store that fails with anything but an unavailable database (here a defect on the
    first attempt only) goes to Django from the start: its answer, the stored decision."""
    from decide import store

    real = store.insert_assignments
    attempts = []

    def fails_once(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise ProgrammingError("relation does not exist")
        return real(*args, **kwargs)

    monkeypatch.setattr("decide.store.insert_assignments", fails_once)
    if endpoint == "decide":
        body, args = {"unit": "SN-9"}, {"secret": decider.secret}
    else:
        args = _flag("etch", "SN-9", secret=decider.secret)
        body = args.pop("body")
    recorder = _Recorder()
    with caplog.at_level(logging.WARNING, logger="decide.hot_path"):
        hot = _call(DecideHotPath(recorder), _environ(body, **args))
    assert (recorder.calls, len(attempts)) == (1, 2)
    assert hot[0] == "200 OK"
    assert "relation does not exist" in caplog.text and "Django decides it again" in caplog.text
    unit = decider.product.units.get(key="SN-9")
    stored = {a.experiment.key: a.variant.key for a in unit.assignments.all()}
    answered = json.loads(hot[2])
    if endpoint == "decide":
        assert answered["variants"] == stored
    else:
        assert answered["variant"] == stored["etch"]


@pytest.mark.parametrize("memory_on", [False, True], ids=["memory-off", "memory-on"])
def test_store_timing_out__the_hot_path_answers_djangos_503_itself(
    stored_unit, decider, settings, monkeypatch, caplog, memory_on
):
    requires_postgres()
    if memory_on:
        settings.DECIDE_KNOWN_UNITS = True
        decide_memory.reset()
        started = decide_memory.known_units()
        wait_until(lambda: started._listening and started._ready)
    monkeypatch.setattr("decide.store.insert_assignments", _timed_out)
    recorder = _Recorder()
    hot, hot_metrics, hot_logs = _observed(
        DecideHotPath(recorder), _environ({"unit": "SN-2"}, secret=decider.secret), caplog
    )
    django, django_metrics, django_logs = _observed(
        WSGIHandler(), _environ({"unit": "SN-3"}, secret=decider.secret), caplog
    )
    decide_memory.reset()
    assert recorder.calls == 0
    assert hot[0] == "503 Service Unavailable"
    assert (hot[0], hot[1][:-1], hot[2]) == (django[0], django[1][:-1], django[2])
    assert hot_metrics == django_metrics
    assert hot_metrics[-1] == (1 if memory_on else 0)  # one miss of the memory, not two
    assert hot_logs == django_logs
    assert not decider.product.units.filter(key__in=["SN-2", "SN-3"]).exists()


@pytest.mark.parametrize("secret", ["revoked", "forged"])
def test_memory_off__bad_key__django_answers_401(stored_unit, decider, secret):
    if secret == "revoked":
        key = decider.product.client_keys.get()
        client_key_revoke(product=decider.product, key_id=key.id)
        sent = decider.secret
    else:
        sent = _forged(decider.secret)
    hot, django, recorder = _both({"unit": stored_unit}, secret=sent)
    assert recorder.calls == 1
    assert hot == django
    assert hot[0] == "401 Unauthorized"


def test_memory_on__forged_key_of_a_remembered_unit__same_401_as_django(known_unit, decider):
    hot, django, recorder = _both({"unit": known_unit}, secret=_forged(decider.secret))
    assert recorder.calls == 1
    assert hot == django
    assert hot[0] == "401 Unauthorized"


def _logged(records) -> list[tuple]:
    """What a log handler gets of each record: logger, level, message, and for Django's own
    line of a 4xx/5xx (django.request) the status and request id it carries."""
    return [
        (
            r.name,
            r.levelname,
            r.getMessage(),
            getattr(r, "status_code", None),
            getattr(getattr(r, "request", None), "request_id", None),
        )
        for r in records
    ]


def _counted(endpoint: str) -> tuple[float, ...]:
    return (
        *(metrics.decide_requests.labels(endpoint, o)._value.get() for o in metrics.OUTCOMES),
        sum(b.get() for b in metrics.decide_duration.labels(endpoint)._buckets),
        metrics.known_hit._value.get(),
        metrics.known_miss._value.get(),
    )


def _observed(application, environ, caplog, endpoint="decide"):
    """The answer, the metrics it moved and the log records it wrote."""
    before = _counted(endpoint)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        answer = _call(application, environ)
    after = _counted(endpoint)
    moved = tuple(b - a for a, b in zip(before, after, strict=True))
    return answer, moved, _logged(caplog.records)


def _timed_out(*args, **kwargs):
    raise OperationalError("canceling statement due to statement timeout")


@pytest.mark.parametrize("memory_on", [False, True], ids=["memory-off", "memory-on"])
@pytest.mark.parametrize("endpoint", ["decide", "ofrep"])
def test_database_unavailable__the_hot_path_answers_djangos_503_itself(
    stored_unit, decider, settings, monkeypatch, caplog, memory_on, endpoint
):
    requires_postgres()  # the statement timeout and the counted queries are PostgreSQL's
    if memory_on:
        settings.DECIDE_KNOWN_UNITS = True
        decide_memory.reset()
        started = decide_memory.known_units()
        wait_until(lambda: started._listening and started._ready)
    if endpoint == "decide":
        body, args = {"unit": "SN-2"}, {"secret": decider.secret}
    else:
        args = _flag("etch", "SN-2", secret=decider.secret)
        body = args.pop("body")
    reads = []

    def read_units(*read_args, **read_kwargs):
        reads.append(1)
        _timed_out()

    monkeypatch.setattr("decide.store.read_units", read_units)
    recorder = _Recorder()
    hot, hot_metrics, hot_logs = _observed(
        DecideHotPath(recorder), _environ(body, **args), caplog, endpoint
    )
    assert (recorder.calls, len(reads)) == (0, 1)  # one read, no second timeout
    django, django_metrics, django_logs = _observed(
        WSGIHandler(), _environ(body, **args), caplog, endpoint
    )
    decide_memory.reset()
    assert hot == django
    status, headers, content = hot
    assert status == "503 Service Unavailable"
    assert dict(headers)["Retry-After"] == "1"
    assert dict(headers)["X-Request-ID"] == REQUEST_ID
    assert json.loads(content) == {"detail": "the database is unavailable or too slow; retry"}
    assert hot_metrics == django_metrics
    assert metrics.OUTCOMES.index("unavailable") == next(
        i for i, moved in enumerate(hot_metrics) if moved
    )
    assert hot_metrics[-1] == (1 if memory_on else 0)  # a miss of the memory, either way
    assert hot_logs == django_logs
    assert [(name, level) for name, level, *_ in hot_logs] == [
        ("config.http", "WARNING"),
        ("lab.access", "INFO"),
        ("django.request", "ERROR"),
    ]


def test_other_database_error__django_answers_from_the_same_failed_read(
    stored_unit, decider, monkeypatch
):
    reads = []

    def broken(*args, **kwargs):
        reads.append(1)
        raise ProgrammingError("relation does not exist")

    monkeypatch.setattr("decide.store.read_units", broken)
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ({"unit": stored_unit}, secret=decider.secret))
    assert (recorder.calls, len(reads)) == (1, 1)
    assert hot[0] == "500 Internal Server Error"
    assert hot == _call(WSGIHandler(), _environ({"unit": stored_unit}, secret=decider.secret))


# --- What the hot path read goes with the request it hands to Django: read once.


@pytest.mark.parametrize("memory_on", [False, True], ids=["memory-off", "memory-on"])
@pytest.mark.parametrize("endpoint", ["decide", "ofrep"])
def test_unit_needing_a_write__read_once_then_stored_by_the_hot_path(
    stored_unit, decider, settings, django_assert_num_queries, caplog, memory_on, endpoint
):
    requires_postgres()  # the statement timeout and the counted queries are PostgreSQL's
    if memory_on:
        settings.DECIDE_KNOWN_UNITS = True
        decide_memory.reset()
        started = decide_memory.known_units()
        wait_until(lambda: started._listening and started._ready)
    if endpoint == "decide":
        body, args = {"unit": "SN-2"}, {"secret": decider.secret}
        twin_body, twin_args = {"unit": "SN-3"}, {"secret": decider.secret}
    else:
        args = _flag("etch", "SN-2", secret=decider.secret)
        twin_args = _flag("etch", "SN-3", secret=decider.secret)
        body, twin_body = args.pop("body"), twin_args.pop("body")
    recorder = _Recorder()
    with django_assert_num_queries(2):  # the read, then the insert
        hot, hot_metrics, hot_logs = _observed(
            DecideHotPath(recorder), _environ(body, **args), caplog, endpoint
        )
    assert recorder.calls == 0
    # The same first decision of a twin unit, by Django alone: the same answer, counted and
    # logged the same way.
    with django_assert_num_queries(2):
        django, django_metrics, django_logs = _observed(
            WSGIHandler(), _environ(twin_body, **twin_args), caplog, endpoint
        )
    decide_memory.reset()
    assert (hot[0], hot[1]) == (django[0], django[1])
    assert hot_metrics == django_metrics
    assert hot_metrics[-1] == (1 if memory_on else 0)
    assert hot_logs == django_logs
    unit = decider.product.units.get(key="SN-2")
    stored = {a.experiment.key: a.variant.key for a in unit.assignments.all()}
    if endpoint == "decide":
        assert json.loads(hot[2])["variants"] == stored
    else:
        assert json.loads(hot[2])["variant"] == stored["etch"]


def test_bad_key__handed_with_its_failed_read__one_read_then_djangos_401(
    stored_unit, decider, django_assert_num_queries
):
    key = decider.product.client_keys.get()
    client_key_revoke(product=decider.product, key_id=key.id)
    recorder = _Recorder()
    with django_assert_num_queries(1):
        hot = _call(DecideHotPath(recorder), _environ({"unit": stored_unit}, secret=decider.secret))
    assert recorder.calls == 1
    assert hot[0] == "401 Unauthorized"
    assert hot == _call(WSGIHandler(), _environ({"unit": stored_unit}, secret=decider.secret))


def test_handed_read__used_only_by_the_decision_it_was_read_for(stored_unit, decider):
    """A read left in the environ for another unit or another key is not used: Django reads."""
    from decide import decisions
    from decide.auth import parse_client_key

    credential = parse_client_key(decider.secret)
    handed = decisions.Handed(credential, stored_unit, None, error=OperationalError("stale"))
    assert handed.of(credential, (stored_unit,))
    assert not handed.of(credential, ("SN-OTHER",))
    assert not handed.of(credential, (stored_unit, "SN-OTHER"))
    assert not handed.of(parse_client_key(_forged(decider.secret)), (stored_unit,))
    for body in ({"unit": "SN-OTHER"}, {"unit": stored_unit}):
        secret = decider.secret if body["unit"] != stored_unit else None
        environ = _environ(body, secret=secret or decider.secret)
        if secret is None:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {_forged(decider.secret)}"
        environ[decisions.HANDED_ENVIRON_KEY] = handed
        status, _, _ = _call(WSGIHandler(), environ)
        assert status == ("200 OK" if secret else "401 Unauthorized")


# --- OFREP single-flag evaluation on the same path.


def _flag(flag: str, unit: str, *, context=None, **request) -> dict:
    body = {"context": {"targetingKey": unit, **(context or {})}}
    return {"PATH_INFO": f"/ofrep/v1/evaluate/flags/{flag}", "body": body, **request}


def _both_flag(flag: str, unit: str, **request) -> tuple[tuple, tuple, _Recorder]:
    args = _flag(flag, unit, **request)
    body = args.pop("body")
    return _both(body, **args)


@pytest.mark.parametrize("scheme", ["bearer", "x-api-key"])
def test_ofrep_flag__stored_unit__answered_as_django_answers(stored_unit, decider, scheme):
    auth = {"secret": decider.secret} if scheme == "bearer" else {"HTTP_X_API_KEY": decider.secret}
    ok = metrics.decide_requests.labels("ofrep", "ok")
    before = ok._value.get()
    args = _flag("etch", stored_unit, **auth)
    body = args.pop("body")
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ(body, **args))
    assert recorder.calls == 0
    assert ok._value.get() == before + 1
    assert hot == _call(WSGIHandler(), _environ(body, **args))
    assert json.loads(hot[2]) == {
        "key": "etch",
        "value": decider.decide(stored_unit)["etch"],
        "reason": "SPLIT",
        "variant": decider.decide(stored_unit)["etch"],
    }


def test_ofrep_flag__remembered_unit__answered_without_a_query(
    known_unit, decider, django_assert_num_queries
):
    recorder = _Recorder()
    args = _flag("dope", known_unit, secret=decider.secret)
    with django_assert_num_queries(0):
        hot = _call(DecideHotPath(recorder), _environ(args.pop("body"), **args))
    assert recorder.calls == 0
    django = _call(WSGIHandler(), _environ(**_flag_environ("dope", known_unit, decider)))
    assert hot == django


def _flag_environ(flag, unit, decider) -> dict:
    args = _flag(flag, unit, secret=decider.secret)
    return {"body": args.pop("body"), **args}


def test_ofrep_flag__paused_experiment__no_value_same_as_django(stored_unit, decider):
    decider.change(decider.product.experiments.get(key="etch"), status="disabled")
    hot, django, recorder = _both_flag("etch", stored_unit, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django
    assert json.loads(hot[2]) == {"key": "etch", "reason": "DISABLED", "variant": ""}


def test_ofrep_flag__unknown_flag__same_404_as_django(stored_unit, decider):
    hot, django, recorder = _both_flag("nope", stored_unit, secret=decider.secret)
    assert recorder.calls == 0
    assert hot == django
    assert hot[0] == "404 Not Found"
    assert json.loads(hot[2])["errorCode"] == "FLAG_NOT_FOUND"


def test_ofrep_flag__context_attributes__same_answer_as_django(stored_unit, decider):
    hot, django, recorder = _both_flag(
        "etch", stored_unit, context={"line": "A"}, secret=decider.secret
    )
    assert recorder.calls == 0
    assert hot == django


def test_ofrep_flag__new_unit__stored_by_the_hot_path_exactly_as_django_answers(
    stored_unit, decider
):
    args = _flag("etch", "SN-NEW", secret=decider.secret)
    body = args.pop("body")
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ(body, **args))
    assert recorder.calls == 0
    assert hot[0] == "200 OK"
    stored = decider.product.units.get(key="SN-NEW").assignments.get()
    assert json.loads(hot[2])["variant"] == stored.variant.key
    assert hot == _call(WSGIHandler(), _environ(body, **args))


@pytest.mark.parametrize(
    ("flag", "unit", "request_args", "status"),
    [
        ("etch", "SN-1", {"secret": "forged"}, "401 Unauthorized"),
        ("etch", "SN-1", {"secret": None}, "401 Unauthorized"),
        ("etch", "SN-1", {"raw": b'{"context": {}}'}, "400 Bad Request"),
        ("etch", "SN-1", {"raw": b"not json"}, "400 Bad Request"),
        ("etch", "", {}, "400 Bad Request"),
        ("bad key!", "SN-1", {}, "404 Not Found"),
        ("etch/extra", "SN-1", {}, "404 Not Found"),
        ("etch", "SN-1", {"HTTP_ORIGIN": "https://app.example"}, "200 OK"),
    ],
    ids=[
        "forged-secret",
        "no-key",
        "no-targeting-key",
        "not-json",
        "empty-unit",
        "invalid-flag-key",
        "longer-path",
        "cors-origin",
    ],
)
def test_ofrep_flag__anything_else__handed_to_django(
    stored_unit, decider, settings, flag, unit, request_args, status
):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    args = {**_flag(flag, unit), **request_args}
    if args.get("secret") == "forged":
        args["secret"] = _forged(decider.secret)
    elif "secret" not in args:
        args["secret"] = decider.secret
    body = args.pop("body")
    recorder = _Recorder()
    hot = _call(DecideHotPath(recorder), _environ(body, **args))
    assert recorder.calls == 1
    assert hot[0] == status, hot
    django = _call(WSGIHandler(), _environ(body, **args))
    assert hot == django
