"""Known units without a database round trip: a worker's memory of what `read_units` read.

A known unit's decision is the same as long as nothing it depends on changes: the client key
(its digest, revocation), the product (status, config version) and the unit's stored
assignments. Each worker process keeps what decide.store.read_units returned for the units it
decided, and answers them again from memory, under three rules:

1. **Invalidated by PostgreSQL, not by time.** Triggers (migration 0005) send a notification
   on channel `lab_decide` with every write that can change such an answer: any change of a
   client key, product, step, experiment, variant or layer (payload `*`: forget everything),
   and any change of a unit or of its assignments other than decide's own first decisions
   (payload `u:<id>,<id>,...`: forget those units). A thread of the worker LISTENs on its own
   connection and applies them. A request first checks, without blocking, whether that
   connection has unread data; if so it waits (at most CATCH_UP_SECONDS) until the listener
   has applied it, or goes to the database. So a change is seen by the first decision that
   starts after PostgreSQL delivered its notification. A hard bound on top: the listener
   sends itself a heartbeat notification every HEARTBEAT_SECONDS, and memory is served only
   while one sent at most STALENESS_BOUND_SECONDS ago has come back; notifications arrive in
   commit order, so every change committed before it has been applied. A change is thus
   answered from memory for at most STALENESS_BOUND_SECONDS after its commit, whatever the
   load (measured in load_tests/RESULTS.md, "Known units in memory").
2. **Nothing is served while the listener is not listening.** Until it has LISTENed, after
   its connection fails and until it has LISTENed again, every decision goes to the database,
   and the memory is emptied when it listens again. An entry read while a notification was
   being applied is not kept (a generation counter). Entries also expire after
   DECIDE_KNOWN_UNITS_TTL seconds, a bound for writes no trigger sees (a restore with
   triggers disabled).
3. **Only answers that are reads are served.** An answer from memory must be a stored
   assignment, or a null answer fixed by the config alone (paused, unknown, product disabled,
   off schedule, outside coverage or the layer's slot). A decision that would store
   anything, or whose null answer depends on the attributes sent (a condition), goes to the
   database, which has the last word (decide.decisions). So the memory can delay what a unit
   is told by at most the delivery time above, and can never make decide store a variant.

PostgreSQL only (LISTEN/NOTIFY); off on SQLite and in the test settings, on by default
otherwise (DECIDE_KNOWN_UNITS). See docs/decide.md, "Known units in memory".
"""

import hmac
import logging
import os
import select
import threading
import time
from typing import NamedTuple

from django.conf import settings
from django.db import connection

from decide import metrics
from decide.auth import ClientCredential

logger = logging.getLogger(__name__)

CHANNEL = "lab_decide"
# The payload meaning "forget everything"; otherwise "u:" and comma-separated unit ids.
EVERYTHING = "*"
UNITS_PREFIX = "u:"
# How long a request waits for the listener to apply a notification that has arrived (a
# heartbeat, most often: 20 a second) before it asks the database instead. 50 ms made the
# closed-loop p99 of known units 56 ms (up to 270) when both cores were busy and the listener
# thread waited for one; 5 ms: 18 ms, for the same throughput and memory hits.
CATCH_UP_SECONDS = 0.005
# The listener sends itself a heartbeat this often, on a channel of its own, and memory is
# served only while a heartbeat sent at most STALENESS_BOUND_SECONDS ago has come back:
# notifications are delivered in commit order, so every change committed before that
# heartbeat has been applied. Past the bound (PostgreSQL or this worker starved of CPU, the
# connection stuck), decisions go to the database.
HEARTBEAT_SECONDS = 0.05
STALENESS_BOUND_SECONDS = 0.2
RECONNECT_SECONDS = 1.0
# How the listeners' connections show in pg_stat_activity.
APPLICATION_NAME = "lab decide.known"


class Entry(NamedTuple):
    token: str  # the full client key that was checked against the database
    state: object  # decide.store.ProductState: the key's product, status and config version
    unit: object  # decide.store.UnitRow
    expires: float


class KnownUnits:
    """One worker's memory of known units, kept fresh by a LISTEN thread."""

    def __init__(self, *, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: dict[tuple[str, str], Entry] = {}
        self._keys_by_unit: dict[int, set[tuple[str, str]]] = {}
        self._cond = threading.Condition()
        self._generation = 0  # changes whenever something may have been forgotten
        self._applied = 0  # batches of notifications applied
        self._draining = False
        self._listening = False
        self._fd = -1
        # When the latest heartbeat that came back was sent (time.monotonic()).
        self._confirmed_at = float("-inf")
        self._stop = threading.Event()
        self._wakeup: tuple[int, int] | None = None  # a pipe that interrupts the listener
        self._thread: threading.Thread | None = None
        self._pid = 0

    # --- The request side.

    def start(self) -> None:
        """Start the listener in this process (after a fork, again: threads do not follow)."""
        pid = os.getpid()
        if self._pid == pid and self._thread is not None:
            return
        with self._cond:
            if self._pid == pid and self._thread is not None:
                return
            self._pid = pid
            self._listening = False
            self._forget_all()
            self._stop.clear()
            self._wakeup = os.pipe()
            self._thread = threading.Thread(
                target=self._listen_forever, name="lab-known-units", daemon=True
            )
            self._thread.start()

    def generation(self) -> int:
        return self._generation

    def get(self, credential: ClientCredential, unit_key: str) -> Entry | None:
        """The unit's entry if it may be served now, else None (the database answers).
        Whether it is then served is the caller's to count (metrics.known_hit/known_miss)."""
        key = (credential.prefix, unit_key)
        if key not in self._entries or not self._fresh():
            return None
        # Looked up after catching up: what was applied meanwhile may have removed it.
        entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            return None
        if not hmac.compare_digest(entry.token, credential.secret):
            # Another secret with the same prefix: the database says whether it is valid.
            return None
        return entry

    def holds(self, credential: ClientCredential, unit_key: str) -> bool:
        """Whether there is an entry for the unit under this key's prefix, fresh or not: a
        cheap first look (`get` decides whether it may be served)."""
        return (credential.prefix, unit_key) in self._entries

    def put(
        self,
        credential: ClientCredential,
        unit_key: str,
        state,
        unit,
        generation: int,
    ) -> None:
        """Keep what the database just said about a known unit, unless something may have
        changed since it was read (`generation` is the one taken before the read)."""
        key = (credential.prefix, unit_key)
        with self._cond:
            if not self._listening or self._draining or self._generation != generation:
                return
            if key not in self._entries and len(self._entries) >= self.max_entries:
                self._evict(next(iter(self._entries)))
            self._entries[key] = Entry(credential.secret, state, unit, time.monotonic() + self.ttl)
            self._keys_by_unit.setdefault(unit.unit_id, set()).add(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self) -> bool:
        """True when every change committed more than STALENESS_BOUND_SECONDS ago, and every
        notification PostgreSQL has delivered since, is applied."""
        if not self._listening or not self._heartbeat_recent():
            return False
        seen = self._applied
        if not self._draining and not _readable(self._fd):
            return True
        with self._cond:
            self._cond.wait_for(
                lambda: self._applied != seen or not self._listening, CATCH_UP_SECONDS
            )
            return (
                self._listening
                and self._applied != seen
                and not self._draining
                and self._heartbeat_recent()
            )

    def _heartbeat_recent(self) -> bool:
        return time.monotonic() - self._confirmed_at <= STALENESS_BOUND_SECONDS

    # --- The listener side.

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener (and close its connection) and forget everything."""
        self._stop.set()
        thread, wakeup = self._thread, self._wakeup
        if wakeup is not None:
            os.write(wakeup[1], b"x")
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if wakeup is not None:
            for fd in wakeup:
                os.close(fd)
        self._thread = self._wakeup = None
        self._pid = 0

    def _listen_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen_once()
            except Exception as error:  # any failure: stop serving, reconnect
                if not self._stop.is_set():
                    logger.warning("known units: listener stopped (%s); reconnecting", error)
            finally:
                with self._cond:
                    self._listening = False
                    self._fd = -1
                    self._forget_all()
                    self._cond.notify_all()
            self._stop.wait(RECONNECT_SECONDS)

    def _listen_once(self) -> None:
        import psycopg

        target = listener_connection_params()
        heartbeats = f"{CHANNEL}_heartbeat_{os.getpid()}_{os.urandom(4).hex()}"
        # Two sessions: one that only listens, so that every notification it has not read
        # yet is unread data on its socket (what requests check), and one that sends the
        # heartbeats (nothing waits for them to be durable).
        with (
            psycopg.connect(**target, autocommit=True) as listener,
            psycopg.connect(**target, autocommit=True) as sender,
        ):
            sender.execute("SET synchronous_commit = off")
            listener.execute(f"LISTEN {CHANNEL}")
            listener.execute(f"LISTEN {heartbeats}")
            with self._cond:
                self._fd = listener.fileno()
                self._forget_all()
                self._confirmed_at = float("-inf")
                self._listening = True
            logger.info("known units: listening on %s", CHANNEL)
            wakeup = self._wakeup[0]
            sent: dict[str, float] = {}  # heartbeat payload -> when it was sent
            sequence = 0
            next_heartbeat = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_heartbeat:
                    sequence += 1
                    sent[str(sequence)] = now
                    sender.execute("SELECT pg_notify(%s, %s)", [heartbeats, str(sequence)])
                    next_heartbeat = now + HEARTBEAT_SECONDS
                    if len(sent) > 1000:  # heartbeats that never came back
                        sent.clear()
                wait = max(0.0, next_heartbeat - time.monotonic())
                ready, _, _ = select.select([self._fd, wakeup], [], [], wait)
                if wakeup in ready:
                    return
                if self._fd not in ready:
                    continue
                with self._cond:
                    self._draining = True
                try:
                    payloads, confirmed = [], None
                    for notification in listener.notifies(timeout=0):
                        if notification.channel == heartbeats:
                            confirmed = sent.pop(notification.payload, confirmed)
                        else:
                            payloads.append(notification.payload)
                    if payloads:
                        self.apply(payloads)
                    if confirmed is not None:
                        # After applying what came before it: delivery is in commit order.
                        self._confirmed_at = max(self._confirmed_at, confirmed)
                finally:
                    with self._cond:
                        self._draining = False
                        self._applied += 1
                        self._cond.notify_all()

    def apply(self, payloads: list[str]) -> None:
        """Forget what the notifications name (everything, for anything not understood)."""
        units: set[int] = set()
        for payload in payloads:
            if payload.startswith(UNITS_PREFIX):
                try:
                    units.update(int(part) for part in payload[len(UNITS_PREFIX) :].split(","))
                    continue
                except ValueError:
                    pass
            with self._cond:
                self._forget_all()
            metrics.known_invalidated_all.inc()
            return
        with self._cond:
            self._generation += 1
            for unit_id in units:
                for key in self._keys_by_unit.pop(unit_id, ()):
                    self._entries.pop(key, None)
        metrics.known_invalidated_units.inc(len(units))

    def _forget_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._keys_by_unit.clear()

    def _evict(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            keys = self._keys_by_unit.get(entry.unit.unit_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_unit[entry.unit.unit_id]


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


def _readable(fd: int) -> bool:
    if fd < 0:
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


_known: KnownUnits | None = None
_known_lock = threading.Lock()


def known_units() -> KnownUnits | None:
    """This process's memory of known units, started on first use; None when it is off."""
    global _known
    if not enabled():
        return None
    known = _known
    if known is None:
        with _known_lock:
            if _known is None:
                _known = KnownUnits(
                    max_entries=settings.DECIDE_KNOWN_UNITS_MAX,
                    ttl=settings.DECIDE_KNOWN_UNITS_TTL,
                )
            known = _known
    known.start()
    return known


def enabled() -> bool:
    return settings.DECIDE_KNOWN_UNITS and connection.vendor == "postgresql"


def reset() -> None:
    """Stop and drop this process's memory (tests, settings changes)."""
    global _known
    with _known_lock:
        if _known is not None:
            _known.stop()
        _known = None
