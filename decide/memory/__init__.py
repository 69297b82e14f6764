"""Known units without a database round trip: a worker's memory of what `read_units` read.

A known unit's decision is the same as long as nothing it depends on changes: the client key
(its digest, revocation), the product (status, config version) and the unit's stored
assignments. Each worker process keeps, for the units it decided, what decide.store.read_units
returned that an answer needs, and answers them again from memory, under five rules:

1. **A change is served from memory for at most STALENESS_BOUND_SECONDS (200 ms) after its
   commit, under any load.** Triggers (migrations 0005, 0007) notify every write that can
   change such an answer; a thread of the worker applies them, and a request waits (briefly)
   for what has arrived and not been applied yet. Heartbeats bound the rest: memory is served
   only while one sent at most the bound ago has come back (decide.memory.listener).
2. **It never causes a wrong assignment to be stored.** Only answers that are reads are
   served; anything that would store, or tests a condition, asks the database, which has the
   last word (decide.memory.policy). Nothing is served or kept while the listener is not
   listening; an entry read while a notification was being applied is not kept.
3. **It is bounded in bytes.** Entries keep only what an answer needs (never the unit's stored
   attributes, never the client key itself: its SHA-256 digest), their sizes are estimated
   conservatively, and the least recently used go first beyond DECIDE_KNOWN_UNITS_MAX_MIB or
   DECIDE_KNOWN_UNITS_MAX units (decide.memory.entries). Answers kept for repeated requests
   (decide.hot_path) count in the same budget, and go first.
4. **One product's writes never empty another product's memory.** Product-scoped changes
   notify `p:<product id>` and forget that product's entries only.
5. **Anything that replaces data beneath it empties it within the same bound**: a restore, a
   TRUNCATE, DDL, the database recreated (the heartbeat's identity check).

Besides what it read, each worker remembers what other workers' first decisions stored: the
statement that stores them notifies it, in the same commit (decide.memory.listener, `Learn`),
so a unit's second decision is answered from memory whichever worker takes it. Learnt in
commit order with every notification that forgets, it is never staler than a read (rule 1),
and it is only ever assignments the database stored (rule 2), within the same budget (rule 3).

The key a request presents is checked (its digest, in constant time) before anything the
memory holds about the unit is looked at, so what a request can learn never depends on it.
Entries also expire after DECIDE_KNOWN_UNITS_TTL seconds, a bound for writes nothing sees
(triggers skipped under `session_replication_role = replica`).

PostgreSQL only (LISTEN/NOTIFY); off on SQLite and in the test settings, on by default
otherwise (DECIDE_KNOWN_UNITS). See docs/decide.md, "Known units in memory".
"""

import threading

from django.conf import settings
from django.db import connection

from decide.memory.known_units import Known, KnownUnits
from decide.memory.listener import (
    APPLICATION_NAME,
    CHANNEL,
    HEARTBEAT_SECONDS,
    STALENESS_BOUND_SECONDS,
    listener_connection_params,
)

__all__ = [
    "APPLICATION_NAME",
    "CHANNEL",
    "HEARTBEAT_SECONDS",
    "STALENESS_BOUND_SECONDS",
    "Known",
    "KnownUnits",
    "enabled",
    "known_units",
    "listener_connection_params",
    "reset",
]

MIB = 1024 * 1024

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
                    max_bytes=int(settings.DECIDE_KNOWN_UNITS_MAX_MIB * MIB),
                    ttl=settings.DECIDE_KNOWN_UNITS_TTL,
                )
            known = _known
    known.start()
    return known


def enabled() -> bool:
    return settings.DECIDE_KNOWN_UNITS and _vendor() == "postgresql"


_default_vendor: str | None = None


def _vendor() -> str:
    """The default database's vendor, read once (Django's connection proxy costs a few
    microseconds a lookup, on every decision)."""
    global _default_vendor
    if _default_vendor is None:
        _default_vendor = connection.vendor
    return _default_vendor


def reset() -> None:
    """Stop and drop this process's memory (tests, settings changes)."""
    global _known, _default_vendor
    _default_vendor = None
    with _known_lock:
        if _known is not None:
            _known.stop()
        _known = None
