"""The listener of the memory of known units: what PostgreSQL says has changed.

A thread per worker process, on two sessions of its own (`application_name`
APPLICATION_NAME): one that only LISTENs on channel `lab_decide`, so that a notification it
has not applied yet is unread data on its socket (what requests check, decide.memory), and
one that sends it a heartbeat every HEARTBEAT_SECONDS.

- **Notifications** (the triggers of migration 0007) name what to forget: `u:<id>,...` those
  units, `p:<id>,...` everything of those products, `*` (or anything not understood)
  everything. Decide's own first decisions (decide.store's insert, in the same statement,
  so in the same commit) say what they stored: `l:...` (`Learn`), which every worker
  remembers, so that a unit's second decision is answered from memory whichever worker
  takes it. Applied in the order they come, which is commit order: whatever changes a unit
  after it was learnt forgets it again.
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

from decide.store import KNOWN_UNITS_CHANNEL, LEARN_PREFIX

if TYPE_CHECKING:
    from decide.memory.known_units import KnownUnits

logger = logging.getLogger(__name__)

CHANNEL = KNOWN_UNITS_CHANNEL
# Payloads: forget everything; or "u:" / "p:" and comma-separated unit / product ids; or
# LEARN_PREFIX ("l:"), what a first decision stored (`Learn`, sent by decide.store's insert).
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


class Learn(NamedTuple):
    """A first decision's new assignments, as its statement stored them (decide.store): a
    unit that statement created (`created`: these are all its assignments), or assignments
    added to a unit that existed (to add to what a worker holds of it, if anything)."""

    product_id: int
    unit_id: int
    unit_key: str
    created: bool
    assignments: dict[int, int]  # experiment id -> variant id, stored as `hash`


def parse(payloads: list[str]) -> Forget:
    """What to forget; everything for anything not understood. (What to learn is left to
    `parse_in_order`: this only says what a batch forgets.)"""
    products: set[int] = set()
    units: set[int] = set()
    for change in parse_in_order(payloads):
        if isinstance(change, Learn):
            continue
        if change.everything:
            return change
        products |= change.products
        units |= change.units
    return Forget(False, frozenset(products), frozenset(units))


def parse_in_order(payloads: list[str]) -> list[Forget | Learn]:
    """Each notification's change, in the order they came (commit order): a change after a
    learnt unit can forget it. Anything not understood forgets everything."""
    changes: list[Forget | Learn] = []
    for payload in payloads:
        if payload.startswith(LEARN_PREFIX):
            learnt = _learnt(payload)
            changes.append(learnt if learnt is not None else _EVERYTHING)
            continue
        for prefix, products in ((UNITS_PREFIX, False), (PRODUCTS_PREFIX, True)):
            if payload.startswith(prefix):
                try:
                    ids = frozenset(int(part) for part in payload[len(prefix) :].split(","))
                except ValueError:
                    changes.append(_EVERYTHING)
                else:
                    none: frozenset[int] = frozenset()
                    changes.append(
                        Forget(False, ids, none) if products else Forget(False, none, ids)
                    )
                break
        else:
            changes.append(_EVERYTHING)
    return changes


_EVERYTHING = Forget(True, frozenset(), frozenset())


def _learnt(payload: str) -> Learn | None:
    """`l:<product id>:<unit id>:<n|m>:<experiment id>.<variant id>,...:<unit key>` (the
    unit key last: it may hold any character)."""
    try:
        product, unit, kind, pairs, unit_key = payload[len(LEARN_PREFIX) :].split(":", 4)
        assignments = {}
        for pair in pairs.split(","):
            experiment, variant = pair.split(".")
            assignments[int(experiment)] = int(variant)
        if kind not in ("n", "m"):
            return None
        return Learn(int(product), int(unit), unit_key, kind == "n", assignments)
    except ValueError:
        return None


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
