"""What the memory of known units holds: typed entries, bounded in bytes, least recently used
first out.

Two kinds of entry, in one order of use:

- `KeyEntry`, per client-key prefix: the SHA-256 digest of the key that the database accepted
  (never the key itself) and what that read said of its product (id, status, config version).
  A request's key is checked against it, in constant time, before any unit is looked up.
- `UnitEntry`, per (product, unit key): the unit's id and its stored assignments. Not its
  stored attributes: a caller may store megabytes of them per unit, and an answer from memory
  never needs them (decide.memory.policy). Put from a read, or learnt from what another
  decision stored (`learn`: only in a product whose key entry is held).

A third kind rides on those two: `Answer`, a request answered from them, by a digest of what
the request sent (decide.hot_path): the same request is answered again with the same bytes
while the key entry and the unit entry it was answered from are still the ones held, without
parsing, validating or planning it again. It holds the answer and those two entries (never
the request, nor its key: only a keyed digest of them), at most ANSWERS_PER_UNIT per unit,
dropped with its unit entry, and counts in the same byte budget, where answers go before any
entry.

Each entry's size is estimated when it is put, conservatively (an upper bound of what Python
allocates for it and for its places in the indexes, checked by tests/decide/test_memory.py
with tracemalloc), and the total is kept under a byte budget as well as a count of units.
Entries are indexed by product (forgetting one product leaves the others) and by unit id.

Not thread-safe on its own: decide.memory.known_units.KnownUnits serialises the changes;
lookups are single dictionary operations.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from collections import OrderedDict
from dataclasses import dataclass

from decide import metrics
from decide.auth import ClientCredential
from decide.store import ProductState, Stored, UnitRow

# What a unit entry holds instead of the stored attributes (decide.memory.policy).
ATTRIBUTES_NOT_KEPT = object()

# Fixed bytes per entry beyond the sizes measured at put (sys.getsizeof of what it holds):
# the entry object, the row tuple, the key tuple, its slot in the order and in the indexes.
# Measured with tracemalloc (CPython 3.12, 64-bit) at about 560 bytes for a unit and 400 for
# a key, rounded up; the test of the estimate fails if they ever fall short.
_UNIT_FIXED_BYTES = 768
_KEY_FIXED_BYTES = 640
# Per stored assignment, beyond the dictionary's own table (sys.getsizeof): the Stored
# tuple and its two integers (the source string is interned, shared by all).
_ASSIGNMENT_BYTES = 160

_SHA256_BYTES = 32
# Compared against when a prefix is not remembered, so that a key check costs the same
# whether or not its prefix is in memory.
_NO_DIGEST = bytes(_SHA256_BYTES)


# Answers kept per unit entry (different experiments, attributes or hosts sent for one unit):
# a caller varying its request cannot fill the memory with one unit's answers.
ANSWERS_PER_UNIT = 4
# Fixed bytes per answer beyond its content (sys.getsizeof): the Answer object, its digest,
# its headers' tuple and its own Content-Length, its path, its slots in the answers' order and
# in its unit's list; the entries and the middleware's headers it refers to are held anyway.
# Measured with tracemalloc at about 650, rounded up; the test of the estimate fails if it
# ever falls short.
_ANSWER_FIXED_BYTES = 768


def key_digest(secret: str) -> bytes:
    """The SHA-256 digest of a client key, as rules.credentials.digest stores it (in
    bytes: compared with hmac.compare_digest, never as text)."""
    # surrogatepass: any str has a digest, so no key can make the check raise.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    digest: bytes  # SHA-256 of the client key the database accepted
    state: ProductState  # what that read said of the key's product
    size: int  # estimated bytes


@dataclass(frozen=True, slots=True)
class UnitEntry:
    product_id: int
    row: UnitRow  # id and stored assignments; raw_attributes is ATTRIBUTES_NOT_KEPT
    expires: float  # time.monotonic() past which it is not served
    size: int  # estimated bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A request answered from `key` and `unit` (the entries held under `prefix` and
    `where` when it was answered): valid while both are still the ones held."""

    prefix: str
    key: KeyEntry
    where: tuple[int, str]
    unit: UnitEntry
    status: int
    headers: tuple[tuple[str, str], ...]  # all but X-Request-ID
    content: bytes
    path: str
    size: int


def answer_size(content: bytes) -> int:
    return _ANSWER_FIXED_BYTES + sys.getsizeof(content)


def unit_entry_size(unit_key: str, assignments: dict) -> int:
    return (
        _UNIT_FIXED_BYTES
        + sys.getsizeof(unit_key)
        + sys.getsizeof(assignments)
        + _ASSIGNMENT_BYTES * len(assignments)
    )


def key_entry_size(prefix: str, state: ProductState) -> int:
    return (
        _KEY_FIXED_BYTES
        + sys.getsizeof(prefix)
        + sys.getsizeof(_NO_DIGEST)
        + sys.getsizeof(state.status)
        + sys.getsizeof(state.product_id)
        + sys.getsizeof(state.config_version)
    )


class Entries:
    """Key and unit entries in one least-recently-used order, within `max_bytes` and
    `max_units`."""

    def __init__(self, *, max_bytes: int, max_units: int) -> None:
        self.max_bytes = max_bytes
        self.max_units = max_units
        self.bytes = 0
        self.units = 0
        # prefix -> KeyEntry, (product id, unit key) -> UnitEntry; oldest use first.
        self._lru: OrderedDict[str | tuple[int, str], KeyEntry | UnitEntry] = OrderedDict()
        self._by_product: dict[int, set[str | tuple[int, str]]] = {}
        self._by_unit_id: dict[int, tuple[int, str]] = {}
        self._keys_of_product: dict[int, int] = {}  # product id -> key entries held
        # request digest -> Answer, oldest first; (product id, unit key) -> its digests.
        self._answers: OrderedDict[bytes, Answer] = OrderedDict()
        self._answers_of: dict[tuple[int, str], list[bytes]] = {}

    def __len__(self) -> int:
        return self.units

    # --- Lookups (any thread).

    def admit(self, credential: ClientCredential) -> KeyEntry | None:
        """The key's entry if the key presented is the one the database accepted under its
        prefix, else None. Costs the same whether or not the prefix is remembered."""
        presented = key_digest(credential.secret)
        entry = self._lru.get(credential.prefix)
        expected = entry.digest if entry is not None else _NO_DIGEST
        if not hmac.compare_digest(presented, expected) or entry is None:
            return None
        self._touch(credential.prefix)
        return entry

    def still(self, credential: ClientCredential, key: KeyEntry) -> bool:
        """Whether `key` (admitted for `credential`) is still the entry of its prefix."""
        return self._lru.get(credential.prefix) is key

    def unit(self, key: KeyEntry, unit_key: str) -> UnitEntry | None:
        """The unit's entry in the admitted key's product."""
        where = (key.state.product_id, unit_key)
        entry = self._lru.get(where)
        if entry is not None:
            self._touch(where)
        return entry

    def holds(self, key: KeyEntry, unit_key: str) -> bool:
        return (key.state.product_id, unit_key) in self._lru

    def answer(self, digest: bytes) -> Answer | None:
        """The answer kept for a request's digest, if the entries it was answered from are
        still the ones held (touched, as a lookup of them would)."""
        answer = self._answers.get(digest)
        if answer is None:
            return None
        if self._lru.get(answer.prefix) is not answer.key or (
            self._lru.get(answer.where) is not answer.unit
        ):
            return None
        self._touch(answer.prefix)
        self._touch(answer.where)
        return answer

    def holds_answer(self, digest: bytes) -> bool:
        return digest in self._answers

    @property
    def answers(self) -> int:
        return len(self._answers)

    def _touch(self, where) -> None:
        try:
            self._lru.move_to_end(where)
        except KeyError:  # forgotten meanwhile
            pass

    # --- Changes (one thread at a time).

    def put(
        self,
        credential: ClientCredential,
        unit_key: str,
        state: ProductState,
        unit: UnitRow,
        expires: float,
    ) -> None:
        """Remember a key the database accepted and a unit it read, without the unit's
        stored attributes; then evict the least recently used entries beyond the limits."""
        assignments = {
            experiment_id: Stored(stored.variant_id, sys.intern(stored.source))
            for experiment_id, stored in unit.assignments.items()
        }
        product_id = state.product_id
        self.put_key(credential, state)
        where = (product_id, unit_key)
        entry = UnitEntry(
            product_id,
            UnitRow(unit.unit_id, assignments, ATTRIBUTES_NOT_KEPT),
            expires,
            unit_entry_size(unit_key, assignments),
        )
        if entry.size > self.max_bytes:
            return  # never fits: remembering it would only evict the others
        self._set(where, entry, product_id)
        self._by_unit_id[unit.unit_id] = where
        self._evict_beyond_limits()

    def put_key(self, credential: ClientCredential, state: ProductState) -> None:
        """Remember a key the database accepted and what it read of the key's product."""
        digest = key_digest(credential.secret)
        known = self._lru.get(credential.prefix)
        if (
            isinstance(known, KeyEntry)
            and hmac.compare_digest(known.digest, digest)
            and known.state == state
        ):
            self._touch(credential.prefix)  # the same read of the key: keep its entry
        else:
            size = key_entry_size(credential.prefix, state)
            self._set(credential.prefix, KeyEntry(digest, state, size), state.product_id)
            self._evict_beyond_limits()

    def learn(
        self,
        product_id: int,
        unit_id: int,
        unit_key: str,
        assignments: dict[int, Stored],
        *,
        replace: bool,
        expires: float,
    ) -> bool:
        """Remember assignments a first decision stored: all of a unit (`replace`), or some
        added to a unit, kept only if this unit is held; only in a product whose key is held.
        Then evict beyond the limits. Whether anything was remembered."""
        if not self._keys_of_product.get(product_id):
            return False
        where = (product_id, unit_key)
        held = self._lru.get(where)
        if not replace:
            if not isinstance(held, UnitEntry) or held.row.unit_id != unit_id:
                return False
            assignments = {**held.row.assignments, **assignments}
        entry = UnitEntry(
            product_id,
            UnitRow(unit_id, assignments, ATTRIBUTES_NOT_KEPT),
            expires,
            unit_entry_size(unit_key, assignments),
        )
        if entry.size > self.max_bytes:
            return False
        self._set(where, entry, product_id)
        self._by_unit_id[unit_id] = where
        self._evict_beyond_limits()
        return True

    def put_answer(self, digest: bytes, answer: Answer) -> None:
        """Keep an answer made from entries held now (else nothing: it could never be
        served), at most ANSWERS_PER_UNIT per unit (its oldest goes), within the limits."""
        if self._lru.get(answer.prefix) is not answer.key or (
            self._lru.get(answer.where) is not answer.unit
        ):
            return
        if answer.size > self.max_bytes:
            return
        self._drop_answer(digest)
        held = self._answers_of.get(answer.where, ())
        if len(held) >= ANSWERS_PER_UNIT:
            self._drop_answer(held[0])
        self._answers[digest] = answer
        self._answers_of.setdefault(answer.where, []).append(digest)
        self.bytes += answer.size
        self._evict_beyond_limits()

    def _drop_answer(self, digest: bytes) -> None:
        answer = self._answers.pop(digest, None)
        if answer is None:
            return
        self.bytes -= answer.size
        digests = self._answers_of.get(answer.where)
        if digests is not None:
            digests.remove(digest)
            if not digests:
                del self._answers_of[answer.where]

    def _set(self, where, entry, product_id: int) -> None:
        old = self._lru.pop(where, None)
        if old is not None:
            self._forgotten(where, old)
        self._lru[where] = entry
        self.bytes += entry.size
        if isinstance(entry, UnitEntry):
            self.units += 1
        else:
            self._keys_of_product[product_id] = self._keys_of_product.get(product_id, 0) + 1
        self._by_product.setdefault(product_id, set()).add(where)

    def _evict_beyond_limits(self) -> None:
        # Answers first: each is only a shortcut to what the entries answer anyway.
        while self._answers and self.bytes > self.max_bytes:
            self._drop_answer(next(iter(self._answers)))
        while self._lru and (self.bytes > self.max_bytes or self.units > self.max_units):
            limit = "bytes" if self.bytes > self.max_bytes else "entries"
            where, entry = self._lru.popitem(last=False)
            self._forgotten(where, entry)
            metrics.known_evictions[limit].inc()

    def forget_units(self, unit_ids) -> None:
        for unit_id in unit_ids:
            where = self._by_unit_id.get(unit_id)
            if where is not None:
                self._forget(where)

    def forget_products(self, product_ids) -> None:
        for product_id in product_ids:
            for where in list(self._by_product.get(product_id, ())):
                self._forget(where)

    def forget_all(self) -> None:
        self._lru.clear()
        self._by_product.clear()
        self._by_unit_id.clear()
        self._keys_of_product.clear()
        self._answers.clear()
        self._answers_of.clear()
        self.bytes = self.units = 0

    def _forget(self, where) -> None:
        entry = self._lru.pop(where, None)
        if entry is not None:
            self._forgotten(where, entry)

    def _forgotten(self, where, entry: KeyEntry | UnitEntry) -> None:
        """Account for an entry just removed from the order, and drop it from the indexes."""
        self.bytes -= entry.size
        if isinstance(entry, UnitEntry):
            self.units -= 1
            for digest in list(self._answers_of.get(where, ())):
                self._drop_answer(digest)
            if self._by_unit_id.get(entry.row.unit_id) == where:
                del self._by_unit_id[entry.row.unit_id]
            product_id = entry.product_id
        else:
            product_id = entry.state.product_id
            keys = self._keys_of_product.get(product_id, 0) - 1
            if keys > 0:
                self._keys_of_product[product_id] = keys
            else:
                self._keys_of_product.pop(product_id, None)
        members = self._by_product.get(product_id)
        if members is not None:
            members.discard(where)
            if not members:
                del self._by_product[product_id]
