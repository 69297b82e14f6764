"""Django's PostgreSQL backend with a bounded wait for a read-write connection.

During a planned switchover (or a failover once the new primary is promoted) there is a
moment of a second or two with no server that accepts writes: the old primary is shutting
down and the standby is not yet promoted, so libpq's multi-host form with
`target_session_attrs=read-write` finds no host. Only the *connection* is tried again here,
never a statement: nothing has been sent on a connection that was never made, so trying
again cannot run anything twice. A statement on an established connection that fails stays
an error (503, docs/operations.md "High availability (Patroni)"), since its outcome may be
unknown.

The wait is bounded by `RECONNECT_WAIT_SECONDS` in the alias' settings
(`DATABASE_RECONNECT_WAIT_SECONDS`, config/settings.py). A worker that waits is a worker that
serves nobody else, so after a wait that found no primary the worker tries only once per
connection until one succeeds: a long outage answers 503 at once instead of holding every
worker for the whole bound on every request.

The bound holds for the attempt under way too: psycopg bounds one attempt only by
`connect_timeout`, which it rounds up to 2 s, and an attempt that reaches a standby being
promoted on a busy machine was seen to take 1.3–2 s by itself. Each attempt made during the
wait therefore gives up at the wait's deadline (`_DeadlineConnection`), so a request that
waited answers within the bound and a fraction of a second, never the bound plus a whole
attempt.

The bound is counted from the moment the request reached the front, not from the moment a
connection is wanted: a request that queued behind busy workers (each waiting for a primary)
has spent part of its client's patience already, and a request that wants a second
connection after its first wait (a statement that failed on the connection it made) must
not wait the bound again. gunicorn's `pre_request` hook (gunicorn.conf.py) hands over the
request's start: nginx's `X-Request-Start` (deploy/nginx/lab.conf.template), or the time the
worker took the request when there is no front. Outside gunicorn (tests, `manage.py`) each
connection has the whole bound, as before.
"""

import logging
import re
import threading
import time

import psycopg
from django.db.backends.postgresql import base

logger = logging.getLogger(__name__)

# Between two attempts: a refused connection on loopback or a LAN fails in a millisecond.
ATTEMPT_INTERVAL_SECONDS = 0.1
# Errors no wait cures: wrong credentials (class 28) and a database that does not exist.
HOPELESS_SQLSTATE_PREFIXES = ("28", "3D")
# libpq gives a failed connection no SQLSTATE (psycopg's `sqlstate` is None), only the
# server's message: these are the FATAL messages of those classes, as PostgreSQL words them
# in English (a server with other lc_messages is waited for the whole bound, as before).
HOPELESS_MESSAGES = (
    re.compile(r'FATAL:  (?:database|role) ".*" does not exist'),
    re.compile(r"FATAL:  \w+ authentication failed"),
    re.compile(r"FATAL:  (?:no pg_hba\.conf entry|pg_hba\.conf rejects)"),
)


# A front's start time further back than this (or ahead of this host's clock) is taken for
# a clock that disagrees with this host's, and ignored: the worker's own time is used.
FRONT_CLOCK_TOLERANCE_SECONDS = 60.0

WAIT_ENDED = "the wait for a server that accepts writes ended"

_request = threading.local()
# The deadline of the connection attempts this thread is making, if they have one.
_attempt = threading.local()


class _DeadlineConnection(psycopg.Connection):
    """psycopg's connection, whose attempts give up at this thread's attempt deadline.

    psycopg runs one attempt per host as a generator that its wait loop resumes whenever the
    socket is ready and at least every 0.1 s; the deadline is checked at each resumption.
    An attempt that gives up is an `OperationalError` like a refused one, so psycopg goes on
    to the next host (which gives up at once) and Django wraps the last error as usual.
    """

    @classmethod
    def _connect_gen(cls, conninfo: str = ""):
        deadline = getattr(_attempt, "deadline", None)
        gen = super()._connect_gen(conninfo)
        if deadline is None:
            return (yield from gen)
        try:
            _check(deadline, gen)
            wanted = next(gen)
            while True:
                ready = yield wanted
                _check(deadline, gen)
                wanted = gen.send(ready)
        except StopIteration as done:
            return done.value


def _check(deadline: float, gen) -> None:
    if time.monotonic() >= deadline:
        gen.close()
        raise psycopg.errors.ConnectionTimeout(WAIT_ENDED)


class _Driver:
    """psycopg as Django's backend uses it, with `connect` bounded by the attempt deadline."""

    connect = _DeadlineConnection.connect

    def __getattr__(self, name):
        return getattr(psycopg, name)


def request_started(front_header: str | None = None) -> None:
    """A request begins in this thread: `front_header` is nginx's `X-Request-Start`
    (`t=<seconds since the epoch, with milliseconds>`), absent without a front."""
    now = time.monotonic()
    started = now
    if front_header:
        try:
            age = time.time() - float(front_header.strip().removeprefix("t="))
        except ValueError:
            age = None
        if age is not None and 0 <= age <= FRONT_CLOCK_TOLERANCE_SECONDS:
            started = now - age
    _request.started = started


def request_finished() -> None:
    _request.started = None


def _wait_deadline(bound: float) -> float:
    """Until when a connection may be waited for: `bound` after the request's start, or
    after now outside a request."""
    started = getattr(_request, "started", None)
    return (started if started is not None else time.monotonic()) + bound


def _hopeless(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith(HOPELESS_SQLSTATE_PREFIXES):
        return True
    return any(pattern.search(str(exc)) for pattern in HOPELESS_MESSAGES)


class DatabaseWrapper(base.DatabaseWrapper):
    Database = _Driver()
    # Per worker process (each has its own wrappers): set when a wait ended without a
    # connection, cleared by the next connection made.
    _gave_up = False

    def get_new_connection(self, conn_params):
        bound = float(self.settings_dict.get("RECONNECT_WAIT_SECONDS") or 0)
        if bound <= 0 or DatabaseWrapper._gave_up:
            connection = super().get_new_connection(conn_params)
            DatabaseWrapper._gave_up = False
            return connection
        deadline = _wait_deadline(bound)
        started = time.monotonic()
        attempts = 0
        previous = None
        while True:
            attempts += 1
            _attempt.deadline = deadline
            try:
                connection = super().get_new_connection(conn_params)
            except base.Database.OperationalError as exc:
                if _hopeless(exc) or time.monotonic() + ATTEMPT_INTERVAL_SECONDS >= deadline:
                    # Only a wait that found no primary says the outage is a long one; a
                    # request whose time was spent before it asked (queued) learnt nothing.
                    if attempts > 1 and not _hopeless(exc):
                        DatabaseWrapper._gave_up = True
                    if previous is not None and str(exc) == WAIT_ENDED:
                        # The deadline cut the last attempt short: the one before it says
                        # what the server (or its absence) answered.
                        reason = str(previous).strip().splitlines()[0]
                        raise psycopg.OperationalError(f"{exc}; before it: {reason}") from exc
                    raise
                previous = exc
                time.sleep(ATTEMPT_INTERVAL_SECONDS)
                continue
            finally:
                _attempt.deadline = None
            DatabaseWrapper._gave_up = False
            if attempts > 1:
                logger.warning(
                    "database connection made after %d attempts in %.2f s",
                    attempts,
                    time.monotonic() - started,
                )
            return connection
