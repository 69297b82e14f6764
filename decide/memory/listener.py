"""The listener of the memory of known units: what PostgreSQL says has changed.

A thread per worker process, on two sessions of its own (`application_name`
APPLICATION_NAME): one that only LISTENs on channel `lab_decide`, so that a notification it
has not applied yet is unread data on its socket (what requests check, decide.memory), and
one that sends it a heartbeat every HEARTBEAT_SECONDS.

- **Notifications** (the triggers of migration 0007) name what to forget: `u:<id>,...` those
  units, `p:<id>,...` everything of those products, `*` (or anything not understood)
  everything.
- **Heartbeats.** PostgreSQL delivers notifications in commit order, so when a heartbeat
  comes back every change committed before it was sent has been applied; the memory is
  served only while one sent at most STALENESS_BOUND_SECONDS ago is back.
- **Identity.** Writes that replace data without a trigger seeing them — a restore
  (`pg_restore --clean` drops and re-creates tables and triggers; COPY runs before the
  triggers exist), DROP and CREATE, a table rewritten, the database recreated — change what
  each heartbeat also reads: the database's oid, the file of every table decide reads, and
  the notifying triggers on them. When that differs from the previous heartbeat's, the
  memory forgets everything before that heartbeat can confirm anything; and while a table
  decide reads lacks an enabled notifying trigger (mid-restore, a disabled trigger, an
  unmigrated database) nothing is remembered or served.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from django.conf import settings
from django.db import connection

if TYPE_CHECKING:
    from decide.memory.known_units import KnownUnits

logger = logging.getLogger(__name__)

CHANNEL = "lab_decide"
# Payloads: forget everything; or "u:" / "p:" and comma-separated unit / product ids.
EVERYTHING = "*"
UNITS_PREFIX = "u:"
PRODUCTS_PREFIX = "p:"
# The listener sends itself a heartbeat this often, and memory is served only while a
# heartbeat sent at most STALENESS_BOUND_SECONDS ago has come back. Past the bound
# (PostgreSQL or this worker starved of CPU, the connection stuck), decisions go to the
# database.
HEARTBEAT_SECONDS = 0.05
STALENESS_BOUND_SECONDS = 0.2
RECONNECT_SECONDS = 1.0
# How the listeners' sessions show in pg_stat_activity (the name predates the package:
# monitoring filters on it).
APPLICATION_NAME = "lab decide.known"
# The notifying triggers' names contain this (migrations 0005, 0007).
TRIGGER_NAME_PART = "decide_notify"


class Forget(NamedTuple):
    """What a batch of notifications says to forget."""

    everything: bool
    products: frozenset[int]
    units: frozenset[int]


def parse(payloads: list[str]) -> Forget:
    """What to forget; everything for anything not understood."""
    products: set[int] = set()
    units: set[int] = set()
    for payload in payloads:
        for prefix, ids in ((UNITS_PREFIX, units), (PRODUCTS_PREFIX, products)):
            if payload.startswith(prefix):
                try:
                    ids.update(int(part) for part in payload[len(prefix) :].split(","))
                except ValueError:
                    return Forget(True, frozenset(), frozenset())
                break
        else:
            return Forget(True, frozenset(), frozenset())
    return Forget(False, frozenset(products), frozenset(units))


def watched_tables() -> tuple[str, ...]:
    """The tables decide reads (decide.store.DECIDED_FROM), as PostgreSQL names them."""
    from decide.store import DECIDED_FROM

    return tuple(model._meta.db_table for model in DECIDED_FROM)


# One statement: the heartbeat, and the identity of what decide reads. pg_relation_filenode
# changes when a table is dropped and created again, truncated or rewritten; the triggers'
# oids when they are dropped and created again; their row's xmin whenever they are disabled
# or enabled (even both in one transaction, as `pg_restore --disable-triggers
# --single-transaction` does around its COPY). Catalog reads only: no lock on the tables, so
# a restore holding them does not delay it.
_HEARTBEAT_SQL = """
    WITH watched AS (
        SELECT w.n, to_regclass(quote_ident(w.name)) AS r
        FROM unnest(%(tables)s::text[]) WITH ORDINALITY AS w(name, n)
    ), triggers AS (
        SELECT t.tgrelid, t.oid, t.tgenabled, t.xmin, t.tgname
        FROM pg_trigger t
        WHERE t.tgrelid IN (SELECT r FROM watched) AND NOT t.tgisinternal
    )
    SELECT pg_notify(%(channel)s, %(payload)s),
        (SELECT oid FROM pg_database WHERE datname = current_database())::text
        || '/' || (
            SELECT string_agg(coalesce(pg_relation_filenode(r)::text, '-'), ',' ORDER BY n)
            FROM watched
        ) || '/' || coalesce((
            SELECT string_agg(oid::text || tgenabled::text || xmin::text, ',' ORDER BY oid)
            FROM triggers
        ), ''),
        (
            SELECT count(DISTINCT tgrelid) FROM triggers
            WHERE tgname LIKE %(trigger_name)s AND tgenabled IN ('O', 'A')
        ) = cardinality(%(tables)s::text[])
"""


class Listener:
    """The thread that keeps a KnownUnits fresh."""

    def __init__(self, memory: KnownUnits) -> None:
        self.memory = memory
        self._stop = threading.Event()
        self._wakeup = os.pipe()  # interrupts the wait for notifications
        self._thread = threading.Thread(
            target=self._listen_forever, name="lab-known-units", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        os.write(self._wakeup[1], b"x")
        thread = self._thread
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        for fd in self._wakeup:
            os.close(fd)

    def _listen_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen_once()
            except Exception as error:  # any failure: stop serving, reconnect
                if not self._stop.is_set():
                    logger.warning("known units: listener stopped (%s); reconnecting", error)
            finally:
                self.memory.stopped_listening()
            self._stop.wait(RECONNECT_SECONDS)

    def _listen_once(self) -> None:
        import psycopg

        target = listener_connection_params()
        heartbeats = f"{CHANNEL}_heartbeat_{os.getpid()}_{os.urandom(4).hex()}"
        tables = list(watched_tables())
        # Two sessions: one that only listens, so that every notification it has not read
        # yet is unread data on its socket, and one that sends the heartbeats (nothing
        # waits for them to be durable).
        with (
            psycopg.connect(**target, autocommit=True) as listener,
            psycopg.connect(**target, autocommit=True) as sender,
        ):
            sender.execute("SET synchronous_commit = off")
            listener.execute(f"LISTEN {CHANNEL}")
            listener.execute(f"LISTEN {heartbeats}")
            fd = listener.fileno()
            self.memory.started_listening(fd)
            logger.info("known units: listening on %s", CHANNEL)
            wakeup = self._wakeup[0]
            sent: dict[str, float] = {}  # heartbeat payload -> when it was sent
            sequence = 0
            identity = None
            next_heartbeat = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_heartbeat:
                    sequence += 1
                    _, seen, ready = sender.execute(
                        _HEARTBEAT_SQL,
                        {
                            "channel": heartbeats,
                            "payload": str(sequence),
                            "tables": tables,
                            "trigger_name": f"%{TRIGGER_NAME_PART}%",
                        },
                    ).fetchone()
                    if seen != identity or not ready:
                        # Before this heartbeat can confirm anything: what was read before
                        # the data was replaced must not be served after it.
                        changed = identity is not None and seen != identity
                        self.memory.replaced(ready=ready, changed=changed)
                        identity = seen
                    if ready:
                        sent[str(sequence)] = now
                    next_heartbeat = now + HEARTBEAT_SECONDS
                    if len(sent) > 1000:  # heartbeats that never came back
                        sent.clear()
                wait = max(0.0, next_heartbeat - time.monotonic())
                ready_fds, _, _ = select.select([fd, wakeup], [], [], wait)
                if wakeup in ready_fds:
                    return
                if fd not in ready_fds:
                    continue
                with self.memory.draining():
                    payloads, confirmed = [], None
                    for notification in listener.notifies(timeout=0):
                        if notification.channel == heartbeats:
                            confirmed = sent.pop(notification.payload, confirmed)
                        else:
                            payloads.append(notification.payload)
                    if payloads:
                        self.memory.apply(payloads)
                    if confirmed is not None:
                        # After applying what came before it: delivery is in commit order.
                        self.memory.confirm(confirmed)


def listener_connection_params() -> dict:
    """psycopg.connect() arguments of a listening session: DECIDE_KNOWN_UNITS_LISTEN_URL, or
    the database Django uses (LISTEN needs a session of its own: never through a
    transaction-pooling PgBouncer)."""
    if settings.DECIDE_KNOWN_UNITS_LISTEN_URL:
        params = {"conninfo": settings.DECIDE_KNOWN_UNITS_LISTEN_URL, "connect_timeout": 5}
    else:
        params = connection.get_connection_params()
        for unused in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(unused, None)
    params["application_name"] = APPLICATION_NAME
    return params
