"""Answers kept for the same request (decide.memory.entries.Answer, decide/hot_path.py): a
request the hot path answered from memory is answered again, when it comes back byte for
byte, from the answer kept with the entries it was made from, without being parsed,
validated or planned again; never after those entries changed, never for another key, Host
or scheme, never past the memory's rules (docs/decide.md, "Known units in memory").

The differential half runs against Django's own answer, as tests/decide/test_hot_path.py
does; the entries half needs no database.
"""

import hashlib
import json
import sys
import time
import tracemalloc
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from decide import metrics
from decide.hot_path import DecideHotPath
from decide.memory import STALENESS_BOUND_SECONDS
from decide.memory.entries import ANSWERS_PER_UNIT, Answer, Entries, answer_size
from decide.store import ProductState, Stored, UnitRow
from lab.models import Assignment, ClientKey
from lab.services.credentials import client_key_revoke
from tests.decide.conftest import make_experiment, wait_until
from tests.decide.test_hot_path import _call, _environ, _Recorder

OFREP_PATH = "/ofrep/v1/evaluate/flags/etch"


def _hot(environ):
    recorder = _Recorder()
    answered = _call(DecideHotPath(recorder), environ)
    return answered, recorder.calls


def _refuse(*args, **kwargs):
    raise AssertionError("a kept answer must not be parsed or planned again")


def _without_request_id(headers):
    return [header for header in headers if header[0] != "X-Request-ID"]


def _kept(memory, make_environ):
    """The request's first answer kept: it is sent until the hot path answers it from memory
    and keeps the answer, then until the kept answer may be served. (On a busy machine a
    heartbeat can come back late; memory then rightly sends the decision to the database,
    which keeps nothing.)"""
    answered = []

    def kept() -> bool:
        answered.append(_hot(make_environ()))
        return memory.entries.answers == 1

    wait_until(kept)
    (digest,) = list(memory.entries._answers)
    wait_until(lambda: memory.answer(digest) is not None)
    return answered[-1][0]


def _from_kept_answer(make_environ):
    """The request answered by its kept answer, with nothing built, parsed or planned (any
    other way through the hot path builds Django's request, which raises here, and goes to
    Django) and no query. Memory may be momentarily not fresh on a busy machine (a heartbeat
    late, the listener not yet scheduled): the request then rightly goes another way, and
    is sent again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("decide.hot_path.WSGIRequest", _refuse)
        patch.setattr("decide.decisions._plan", _refuse)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            hits = metrics.known_hit._value.get()
            with CaptureQueriesContext(connection) as queries:
                answered, calls = _hot(make_environ())
            if calls == 0:
                assert len(queries) == 0
                assert metrics.known_hit._value.get() == hits + 1
                return answered
            time.sleep(0.01)
    raise AssertionError("never answered from the kept answer")


# --- Against Django (PostgreSQL: the memory listens for notifications).


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "request_",
    [
        {"body": {"unit": "SN-1"}},
        {"body": {"unit": "SN-1", "experiments": ["dope", "etch"]}},
        {"body": {"context": {"targetingKey": "SN-1"}}, "PATH_INFO": OFREP_PATH},
    ],
    ids=["decide", "decide-experiments", "ofrep"],
)
def test_same_request_again__answered_from_the_kept_answer_as_django_answers(
    known_unit, decider, memory, request_
):
    body, extra = request_["body"], {k: v for k, v in request_.items() if k != "body"}
    # Given a request the hot path answered from memory, its answer kept
    first = _kept(memory, lambda: _environ(body, secret=decider.secret, **extra))
    assert first[0] == "200 OK"
    # When it comes again, byte for byte, with another request id, it is answered from the
    # kept answer (counted as memory's, nothing parsed or planned, no query)
    again = _from_kept_answer(
        lambda: _environ(body, secret=decider.secret, HTTP_X_REQUEST_ID="again-1", **extra)
    )
    # Then as Django answers it, and as the first time but for its request id
    django = _call(
        WSGIHandler(), _environ(body, secret=decider.secret, HTTP_X_REQUEST_ID="again-1", **extra)
    )
    assert again == django
    assert again[2] == first[2]
    assert _without_request_id(again[1]) == _without_request_id(first[1])


@pytest.mark.django_db(transaction=True)
def test_kept_answer__each_request_its_own_fresh_request_id(known_unit, decider, memory):
    def request():
        return _environ({"unit": known_unit}, secret=decider.secret, HTTP_X_REQUEST_ID=None)

    answers = [_kept(memory, request), _from_kept_answer(request), _from_kept_answer(request)]
    ids = [dict(headers)["X-Request-ID"] for _, headers, _ in answers]
    assert len(set(ids)) == 3 and all(len(i) == 32 for i in ids)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "other",
    [
        {"HTTP_HOST": "localhost:8000"},
        {"wsgi.url_scheme": "https"},
        {"HTTP_HOST": "evil.example"},
        {"CONTENT_TYPE": "text/plain"},
        {"secret_suffix": "x"},
    ],
    ids=["another-allowed-host", "https", "host-not-allowed", "not-json", "wrong-secret"],
)
def test_same_body_otherwise_sent__not_the_kept_answer(known_unit, decider, memory, other):
    # Given the answer kept for a request
    body = {"unit": known_unit}
    _kept(memory, lambda: _environ(body, secret=decider.secret))
    # When the same body comes with another Host, scheme, Content-Type or key
    other = dict(other)
    secret = decider.secret + other.pop("secret_suffix", "")
    hot, _ = _hot(_environ(body, secret=secret, **other))
    # Then it is answered as Django answers it, not from the kept answer
    django = _call(WSGIHandler(), _environ(body, secret=secret, **other))
    assert hot == django


@pytest.mark.django_db(transaction=True)
def test_key_revoked__same_request_refused_within_the_bound(known_unit, decider, memory):
    body = {"unit": known_unit}
    _kept(memory, lambda: _environ(body, secret=decider.secret))
    # When the key is revoked, and the staleness bound has passed
    key = ClientKey.objects.get(product=decider.product)
    client_key_revoke(product=decider.product, key_id=key.id)
    time.sleep(STALENESS_BOUND_SECONDS)
    # Then the same request is refused, as Django refuses it
    hot, _ = _hot(_environ(body, secret=decider.secret))
    assert hot[0] == "401 Unauthorized"
    assert hot == _call(WSGIHandler(), _environ(body, secret=decider.secret))


@pytest.mark.django_db(transaction=True)
def test_assignment_changed__same_request_answers_the_new_variant_within_the_bound(
    known_unit, decider, memory
):
    body = {"unit": known_unit, "experiments": ["etch"]}
    first = _kept(memory, lambda: _environ(body, secret=decider.secret))
    before = json.loads(first[2])["variants"]["etch"]
    # When the unit's stored variant is changed (forced), and the bound has passed
    stored = Assignment.objects.get(unit__key=known_unit, experiment__key="etch")
    other = stored.experiment.variants.exclude(key=before).get()
    Assignment.objects.filter(pk=stored.pk).update(variant=other, source="forced")
    time.sleep(STALENESS_BOUND_SECONDS)
    # Then the same request answers the new variant, as Django does
    hot, _ = _hot(_environ(body, secret=decider.secret))
    assert json.loads(hot[2])["variants"]["etch"] == other.key != before
    assert hot == _call(WSGIHandler(), _environ(body, secret=decider.secret))


@pytest.mark.django_db(transaction=True)
def test_experiment_with_a_schedule__answer_not_kept(memory, decider):
    # Given a remembered unit in an experiment with an open window (its answer changes
    # when the window closes, which nothing notifies)
    etch = make_experiment(decider.product, "etch")
    now = timezone.now()
    decider.change(etch, start_at=now - timedelta(hours=1), end_at=now + timedelta(hours=1))
    decider.decide("SN-1")

    def remembered() -> bool:
        decider.decide("SN-1")
        return len(memory) == 1

    wait_until(remembered)

    # When the hot path answers it from memory (sent until memory answers it: on a busy
    # machine a late heartbeat sends it to the database, which would keep nothing anyway)
    def from_memory() -> bool:
        hits = metrics.known_hit._value.get()
        hot, calls = _hot(_environ({"unit": "SN-1"}, secret=decider.secret))
        assert calls == 0 and hot[0] == "200 OK"
        return metrics.known_hit._value.get() == hits + 1

    wait_until(from_memory)
    # Then no answer is kept for it
    assert memory.entries.answers == 0


@pytest.mark.django_db(transaction=True)
def test_unit_entry_expired__kept_answer_not_served(known_unit, decider, memory, monkeypatch):
    _kept(memory, lambda: _environ({"unit": known_unit}, secret=decider.secret))
    (digest,) = list(memory.entries._answers)
    # When the unit's entry is past its TTL
    later = time.monotonic() + memory.ttl + 1
    module = sys.modules["decide.memory.known_units"]
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: later))
    monkeypatch.setattr(memory, "_fresh", lambda: True)
    # Then its kept answer is not served either (memory fresh: only the expiry refuses it)
    assert memory.answer(digest) is None


# --- The entries alone.


def _credential(prefix: str):
    from decide.auth import ClientCredential

    return ClientCredential(prefix, f"lck_{prefix}_s3cret")


def _row(unit_id: int) -> UnitRow:
    return UnitRow(unit_id, {10: Stored(20, "hash")}, "{}")


STATE = ProductState(1, "enabled", 1)


def _put_unit(entries: Entries, unit_key: str, unit_id: int, prefix: str = "k") -> None:
    entries.put(_credential(prefix), unit_key, STATE, _row(unit_id), 1e18)


def _answer_for(entries: Entries, unit_key: str, prefix: str = "k", content=b'{"unit":1}'):
    key = entries._lru[prefix]
    where = (STATE.product_id, unit_key)
    return Answer(
        prefix=prefix,
        key=key,
        where=where,
        unit=entries._lru[where],
        status=200,
        headers=(("Content-Type", "application/json"),),
        content=content,
        path="/api/v1/decide",
        size=answer_size(content),
    )


def _digest(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_answer__served_while_its_entries_are_the_ones_held():
    entries = Entries(max_bytes=1 << 20, max_units=100)
    _put_unit(entries, "U-1", 1)
    entries.put_answer(_digest(1), _answer_for(entries, "U-1"))
    assert entries.answer(_digest(1)) is not None
    # A new read of the unit replaces its entry: the answer goes with the old one
    _put_unit(entries, "U-1", 1)
    assert entries.answer(_digest(1)) is None
    assert entries.answers == 0


@pytest.mark.parametrize(
    "forget",
    [
        lambda entries: entries.forget_units([1]),
        lambda entries: entries.forget_products([STATE.product_id]),
        lambda entries: entries.forget_all(),
    ],
    ids=["unit", "product", "everything"],
)
def test_answer__forgotten_with_its_unit(forget):
    entries = Entries(max_bytes=1 << 20, max_units=100)
    _put_unit(entries, "U-1", 1)
    entries.put_answer(_digest(1), _answer_for(entries, "U-1"))
    bytes_with = entries.bytes
    forget(entries)
    assert entries.answer(_digest(1)) is None
    assert entries.answers == 0
    assert entries.bytes < bytes_with


def test_answer__key_entry_replaced__not_served():
    entries = Entries(max_bytes=1 << 20, max_units=100)
    _put_unit(entries, "U-1", 1)
    entries.put_answer(_digest(1), _answer_for(entries, "U-1"))
    # The key read again with another config version: a new key entry
    entries.put_key(_credential("k"), ProductState(1, "enabled", 2))
    assert entries.answer(_digest(1)) is None


def test_answer__made_from_entries_no_longer_held__not_kept():
    entries = Entries(max_bytes=1 << 20, max_units=100)
    _put_unit(entries, "U-1", 1)
    stale = _answer_for(entries, "U-1")
    _put_unit(entries, "U-1", 1)
    entries.put_answer(_digest(1), stale)
    assert entries.answers == 0


def test_answers_per_unit__bounded_oldest_first():
    entries = Entries(max_bytes=1 << 20, max_units=100)
    _put_unit(entries, "U-1", 1)
    for n in range(ANSWERS_PER_UNIT + 2):
        entries.put_answer(_digest(n), _answer_for(entries, "U-1"))
    assert entries.answers == ANSWERS_PER_UNIT
    assert entries.answer(_digest(0)) is None and entries.answer(_digest(1)) is None
    assert entries.answer(_digest(ANSWERS_PER_UNIT + 1)) is not None


def test_byte_budget__answers_counted_and_evicted_before_any_entry():
    ten = Entries(max_bytes=1 << 20, max_units=100)
    for i in range(10):
        _put_unit(ten, f"U-{i}", i)
    # Given room for ten units and one answer
    answer_bytes = answer_size(b'{"unit":1}')
    entries = Entries(max_bytes=ten.bytes + answer_bytes, max_units=100)
    for i in range(10):
        _put_unit(entries, f"U-{i}", i)
    entries.put_answer(_digest(1), _answer_for(entries, "U-1"))
    assert entries.answers == 1 and len(entries) == 10
    assert entries.bytes == ten.bytes + answer_bytes
    # When a second answer would pass the budget, the older answer goes, not a unit
    entries.put_answer(_digest(2), _answer_for(entries, "U-2"))
    assert entries.answers == 1 and len(entries) == 10
    assert entries.answer(_digest(2)) is not None and entries.answer(_digest(1)) is None
    assert entries.bytes <= entries.max_bytes


# What the hot path's answers share (decide.hot_path.DecideHotPath._headers): made once.
MIDDLEWARE_HEADERS = [
    ("Content-Type", "application/json"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Vary", "origin"),
]


def test_answer_size__estimate_is_at_least_what_python_allocates():
    entries = Entries(max_bytes=1 << 40, max_units=1 << 40)
    for i in range(500):
        _put_unit(entries, f"U-{i}", i)
    templates = [_answer_for(entries, f"U-{i}") for i in range(500)]
    before_bytes = entries.bytes
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, template in enumerate(templates):
            # As decide.hot_path makes it: its content, its headers (the middleware's, shared,
            # then its own Content-Length), its path (Django's request builds it), its digest,
            # the answer, its places in the order and in its unit's list
            content = b'{"unit":"U-%06d","variants":{"etch":"a","anneal":"b"}}' % i
            headers = [*MIDDLEWARE_HEADERS, ("Content-Length", str(len(content)))]
            answer = Answer(
                prefix=template.prefix,
                key=template.key,
                where=template.where,
                unit=template.unit,
                status=200,
                headers=tuple(headers),
                content=content,
                path="".join(["/api/v1/", "decide"]),
                size=answer_size(content),
            )
            digest = hashlib.blake2b(b"%d" % i, digest_size=16).digest()
            entries.put_answer(digest, answer)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = entries.bytes - before_bytes
    assert entries.answers == 500
    assert allocated <= counted <= 3 * allocated, (allocated, counted)
