"""One worker's memory of known units: the entries, served only while they are fresh."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from decide import metrics
from decide.auth import ClientCredential
from decide.memory.entries import Answer, Entries, KeyEntry, UnitEntry
from decide.memory.listener import (
    STALENESS_BOUND_SECONDS,
    Forget,
    Learn,
    Listener,
    parse_in_order,
)
from decide.store import ProductState, Stored, UnitRow
from rules.vocabulary import Reason

# How long a request waits for the listener to apply a notification that has arrived (a
# heartbeat, most often) before it asks the database instead. Short, because on busy cores
# the listener thread may wait for one: a longer wait showed in the p99 of known units and
# bought no more answers from memory (load_tests/RESULTS.md, "the decide hot path, past
# Unleash", has the figures).
CATCH_UP_SECONDS = 0.005


# This process's id, kept current across forks (os.getpid() is a system call, and start()
# runs on every decision).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Known(NamedTuple):
    """What memory says of a unit: its key's product state and its stored assignments, and
    the entries they come from (what an answer made from them is kept with)."""

    state: ProductState
    unit: UnitRow
    key_entry: KeyEntry | None = None
    unit_entry: UnitEntry | None = None


class KnownUnits:
    """One worker's memory of known units, kept fresh by a listener thread."""

    def __init__(self, *, max_entries: int, max_bytes: int, ttl: float) -> None:
        self.ttl = ttl
        self.entries = Entries(max_bytes=max_bytes, max_units=max_entries)
        self._cond = threading.Condition()
        self._generation = 0  # changes whenever something may have been forgotten
        self._applied = 0  # batches of notifications applied
        self._draining = False
        self._listening = False
        # Every table decide reads has its notifying trigger, and the data is the same as
        # at the last heartbeat (decide.memory.listener, "Identity").
        self._ready = False
        self._fd = -1
        # When the latest heartbeat that came back was sent (time.monotonic()).
        self._confirmed_at = float("-inf")
        self._listener: Listener | None = None
        self._pid = 0

    # --- The request side.

    def start(self) -> None:
        """Start the listener in this process (after a fork, again: threads do not follow)."""
        pid = _pid
        if self._pid == pid and self._listener is not None:
            return
        with self._cond:
            if self._pid == pid and self._listener is not None:
                return
            self._pid = pid
            self._listening = self._ready = False
            self._forget_all()
            self._listener = Listener(self)
            self._listener.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener (and close its connections) and forget everything."""
        listener = self._listener
        if listener is not None:
            listener.stop(timeout)
        self._listener = None
        self._pid = 0

    def generation(self) -> int:
        return self._generation

    def get(self, credential: ClientCredential, unit_key: str) -> Known | None:
        """What memory says of the unit if it may be served now, else None (the database
        answers). The key is checked first, against the digest of the key the database
        accepted: a wrong key goes to the database whatever memory holds of the unit.
        Whether the answer is then served is the caller's to count."""
        key = self.entries.admit(credential)
        if key is None:
            return None
        if not self.entries.holds(key, unit_key) or not self._fresh():
            return None
        # Looked up after catching up: what was applied meanwhile may have removed them, and
        # a key entry put meanwhile (a newer read) must not pair an older state with it.
        if not self.entries.still(credential, key):
            return None
        entry = self.entries.unit(key, unit_key)
        if entry is None or entry.expires < time.monotonic():
            return None
        return Known(key.state, entry.row, key, entry)

    def answer(self, digest: bytes) -> Answer | None:
        """The answer kept for this digest of a request (decide.hot_path), under the rules
        that serve the entries it was made from: served only while memory is fresh, the
        key entry and the unit entry still the ones held, and the unit's not expired. The
        request's key is part of the digest: only the key that was admitted when the
        answer was made finds it."""
        if not self.entries.holds_answer(digest) or not self._fresh():
            return None
        # Looked up after catching up: what was applied meanwhile may have replaced them.
        answer = self.entries.answer(digest)
        if answer is None or answer.unit.expires < time.monotonic():
            return None
        return answer

    def put_answer(self, digest: bytes, answer: Answer) -> None:
        """Keep an answer made from memory (`Known`'s entries), unless they are no longer
        the ones held."""
        with self._cond:
            if not self._listening or not self._ready or self._draining:
                return
            self.entries.put_answer(digest, answer)

    def put(
        self,
        credential: ClientCredential,
        unit_key: str,
        state: ProductState,
        unit: UnitRow,
        generation: int,
    ) -> None:
        """Keep what the database just said about a known unit (the key having passed its
        check there), unless something may have changed since it was read (`generation` is
        the one taken before the read)."""
        with self._cond:
            if (
                not self._listening
                or not self._ready
                or self._draining
                or self._generation != generation
            ):
                return
            self.entries.put(credential, unit_key, state, unit, time.monotonic() + self.ttl)

    def put_key(self, credential: ClientCredential, state: ProductState, generation: int) -> None:
        """Keep what the database just said about a key it accepted (a decision that was
        not a read: its unit is learnt from its own notification, which needs the key)."""
        with self._cond:
            if (
                not self._listening
                or not self._ready
                or self._draining
                or self._generation != generation
            ):
                return
            self.entries.put_key(credential, state)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def bytes(self) -> int:
        """The estimated bytes of what is remembered (decide.memory.entries)."""
        return self.entries.bytes

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

    # --- The listener side (decide.memory.listener).

    def started_listening(self, fd: int) -> None:
        with self._cond:
            self._fd = fd
            self._forget_all()
            self._confirmed_at = float("-inf")
            self._ready = False  # until the first heartbeat has read the identity
            self._listening = True

    def stopped_listening(self) -> None:
        with self._cond:
            self._listening = self._ready = False
            self._fd = -1
            self._forget_all()
            self._cond.notify_all()

    def replaced(self, *, ready: bool, changed: bool) -> None:
        """The data beneath may have been replaced (`changed`: its identity is not the last
        heartbeat's) or is not watched by every trigger: forget everything, and remember
        nothing while not `ready`."""
        with self._cond:
            self._forget_all()
            self._ready = ready
        if changed:
            metrics.known_invalidated_all.inc()

    @contextmanager
    def draining(self) -> Iterator[None]:
        """Around the application of what the listener read: requests wait for it."""
        with self._cond:
            self._draining = True
        try:
            yield
        finally:
            with self._cond:
                self._draining = False
                self._applied += 1
                self._cond.notify_all()

    def confirm(self, sent_at: float) -> None:
        self._confirmed_at = max(self._confirmed_at, sent_at)

    def apply(self, payloads: list[str]) -> None:
        """Forget what the notifications name (everything, for anything not understood) and
        learn what first decisions stored, in the order they came."""
        for change in parse_in_order(payloads):
            if isinstance(change, Learn):
                self._learn(change)
            else:
                self._forget(change)

    def _forget(self, forget: Forget) -> None:
        with self._cond:
            if forget.everything:
                self._forget_all()
            else:
                self._generation += 1
                self.entries.forget_products(forget.products)
                self.entries.forget_units(forget.units)
        if forget.everything:
            metrics.known_invalidated_all.inc()
            return
        if forget.products:
            metrics.known_invalidated_products.inc(len(forget.products))
        if forget.units:
            metrics.known_invalidated_units.inc(len(forget.units))

    def _learn(self, learnt: Learn) -> None:
        """Remember what a first decision stored, as of its commit: every change committed
        after it comes after this and forgets it, so it is never staler than what a read
        would have put. Nothing of it changes what memory already answers (it adds stored
        assignments), so the generation stays. Only for a product whose key this worker
        holds: memory answers no other."""
        with self._cond:
            if not self._listening or not self._ready:
                return
            learnt_it = self.entries.learn(
                learnt.product_id,
                learnt.unit_id,
                learnt.unit_key,
                {e: Stored(v, Reason.HASH) for e, v in learnt.assignments.items()},
                replace=learnt.created,
                expires=time.monotonic() + self.ttl,
            )
        if learnt_it:
            (metrics.known_learnt_new if learnt.created else metrics.known_learnt_added).inc()

    def _forget_all(self) -> None:
        self._generation += 1
        self.entries.forget_all()


def _readable(fd: int) -> bool:
    if fd < 0:
        return True
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True
