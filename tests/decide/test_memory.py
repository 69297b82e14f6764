"""The memory of known units (decide.memory): typed entries within a byte budget, least
recently used first out, forgotten per product; the key checked before anything remembered.

The first tests exercise decide.memory.entries alone; the others a listening memory on
PostgreSQL, committed for real (transactional tests).
"""

import hashlib
import json
import time
import tracemalloc

import pytest
from django.db import connection, transaction

from decide import metrics
from decide.auth import ClientCredential, parse_client_key
from decide.memory import STALENESS_BOUND_SECONDS
from decide.memory.entries import ATTRIBUTES_NOT_KEPT, Entries, KeyEntry, UnitEntry
from decide.memory.listener import parse
from decide.store import ProductState, Stored, UnitRow
from lab.models import ClientKey, Unit
from lab.services.units import unit_set_attributes
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment, remember, unit_for, wait_until

MIB = 1024 * 1024


def _credential(prefix: str, secret: str = "s3cret") -> ClientCredential:
    return ClientCredential(prefix, f"lck_{prefix}_{secret}")


def _row(unit_id: int, assignments: int) -> UnitRow:
    return UnitRow(
        unit_id,
        {10_000 + e: Stored(20_000 + e, "hash") for e in range(assignments)},
        '{"line": "' + "x" * 1000 + '"}',
    )


def _evictions(limit: str) -> float:
    return metrics.known_evictions[limit]._value.get()


# --- Entries alone.


@pytest.mark.parametrize("assignments", [0, 3, 40])
def test_entry_sizes__estimate_is_at_least_what_python_allocates(assignments):
    # Given rows as the database returns them (with stored attributes)
    rows = [_row(i, assignments) for i in range(2000)]
    state = ProductState(7, "enabled", 123456789)
    entries = Entries(max_bytes=1 << 40, max_units=1 << 40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # When each is remembered under a unit key made for it (ASCII and not), with keys
        for i, row in enumerate(rows):
            unit_key = f"unit-{i:06d}-" + ("é" if i % 3 == 0 else "") + ("🔧" if i % 7 == 0 else "")
            prefix = f"{i % 50:012x}"
            entries.put(_credential(prefix), unit_key, state, row, time.monotonic() + 60)
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Then the estimate covers what was allocated, without being absurdly above it
    assert len(entries) == 2000
    assert allocated <= entries.bytes <= 3 * allocated, (allocated, entries.bytes)


def test_entries__keep_no_attributes_and_no_clear_key():
    entries = Entries(max_bytes=MIB, max_units=100)
    credential = _credential("abcdef012345")
    entries.put(credential, "SN-1", ProductState(1, "enabled", 5), _row(1, 3), 1e18)
    kept = list(entries._lru.values())
    assert {type(entry) for entry in kept} == {KeyEntry, UnitEntry}
    (key,) = (entry for entry in kept if isinstance(entry, KeyEntry))
    (unit,) = (entry for entry in kept if isinstance(entry, UnitEntry))
    assert key.digest == hashlib.sha256(credential.secret.encode()).digest()
    assert credential.secret not in repr(kept)
    assert unit.row.raw_attributes is ATTRIBUTES_NOT_KEPT
    assert unit.row.assignments == _row(1, 3).assignments


def test_byte_budget__least_recently_used_evicted_first_and_counted():
    one = Entries(max_bytes=MIB, max_units=100)
    one.put(_credential("k"), "U-0000", ProductState(1, "enabled", 1), _row(0, 3), 1e18)
    per_unit = one.bytes  # a key entry and a unit entry
    # Given room for about ten units of one key
    entries = Entries(max_bytes=per_unit * 10, max_units=1000)
    credential = _credential("k")
    state = ProductState(1, "enabled", 1)
    evicted = _evictions("bytes")
    for i in range(10):
        entries.put(credential, f"U-{i:04d}", state, _row(i, 3), 1e18)
    key = entries.admit(credential)
    entries.unit(key, "U-0000")  # used again: now the most recent
    # When more are remembered, up to the first eviction
    i = 10
    while _evictions("bytes") == evicted:
        entries.put(credential, f"U-{i:04d}", state, _row(i, 3), 1e18)
        i += 1
    # Then the least recently used went first: the second unit, not the one used again
    key = entries.admit(credential)
    assert not entries.holds(key, "U-0001")
    assert entries.holds(key, "U-0000") and entries.holds(key, f"U-{i - 1:04d}")
    # And whatever comes after, the total stays within the budget, each eviction counted
    for j in range(i, i + 30):
        entries.put(credential, f"U-{j:04d}", state, _row(j, 3), 1e18)
        assert entries.bytes <= per_unit * 10
    assert _evictions("bytes") - evicted == i + 30 - len(entries)


def test_count_limit__oldest_evicted():
    entries = Entries(max_bytes=MIB * 64, max_units=5)
    evicted = _evictions("entries")
    for i in range(8):
        entries.put(_credential("k"), f"U-{i}", ProductState(1, "enabled", 1), _row(i, 1), 1e18)
    assert len(entries) == 5
    assert _evictions("entries") - evicted == 3


def test_entry_larger_than_the_budget__not_kept():
    entries = Entries(max_bytes=4096, max_units=100)
    entries.put(_credential("k"), "small", ProductState(1, "enabled", 1), _row(1, 1), 1e18)
    entries.put(_credential("k"), "huge", ProductState(1, "enabled", 1), _row(2, 400), 1e18)
    key = entries.admit(_credential("k"))
    assert entries.holds(key, "small") and not entries.holds(key, "huge")


def test_forget_products__other_products_kept():
    entries = Entries(max_bytes=MIB, max_units=100)
    entries.put(_credential("one"), "U", ProductState(1, "enabled", 1), _row(1, 1), 1e18)
    entries.put(_credential("two"), "U", ProductState(2, "enabled", 1), _row(2, 1), 1e18)
    entries.forget_products([1])
    assert entries.admit(_credential("one")) is None
    assert entries.holds(entries.admit(_credential("two")), "U")
    entries.forget_products([2])
    assert entries.bytes == 0 and len(entries) == 0 and not entries._lru


def test_key_check__a_wrong_secret_admits_nothing():
    entries = Entries(max_bytes=MIB, max_units=100)
    entries.put(_credential("k"), "U", ProductState(1, "enabled", 1), _row(1, 1), 1e18)
    assert entries.admit(_credential("k")) is not None
    assert entries.admit(_credential("k", "s3creT")) is None
    assert entries.admit(_credential("other")) is None
    # any text at all is checked, none raises
    assert entries.admit(ClientCredential("k", "lck_k_\udcff\x00é")) is None


@pytest.mark.parametrize(
    ("payloads", "expected"),
    [
        (["u:1,2", "p:7"], (False, {7}, {1, 2})),
        (["p:7,8", "p:9"], (False, {7, 8, 9}, set())),
        (["p:7", "*"], (True, set(), set())),
        (["p:7,x"], (True, set(), set())),
        (["q:1"], (True, set(), set())),
        ([""], (True, set(), set())),
    ],
)
def test_notifications__what_they_forget(payloads, expected):
    forget = parse(payloads)
    assert (forget.everything, set(forget.products), set(forget.units)) == expected


# --- A listening memory on PostgreSQL.

pg = pytest.mark.django_db(transaction=True)


def _decide_twice(decider, unit: str) -> None:
    """What remembers a unit when memory may keep it: stored, then read."""
    decider.decide(unit)
    decider.decide(unit)


def _remember(memory, decider, unit: str) -> None:
    decider.decide(unit)
    remember(memory, decider, unit)


@pg
def test_unit_with_maximal_attributes__remembered_in_a_few_hundred_bytes(memory, decider):
    # Given a unit that stores the most attributes a client may send (50 x 100 x 256)
    make_experiment(decider.product, "etch")
    _remember(memory, decider, "SN-1")
    assert len(memory) == 1
    unit = Unit.objects.get(key="SN-1")
    attributes = {f"a{n}": [f"{n:03d}{i:03d}" + "x" * 250 for i in range(100)] for n in range(50)}
    unit_set_attributes(unit=unit, attributes=attributes)
    wait_until(lambda: len(memory) == 0)
    # When it is decided again and remembered
    remember(memory, decider, "SN-1")
    assert len(memory) == 1
    # Then what memory holds for it is small: the attributes are not kept
    assert memory.bytes < 4096, memory.bytes
    assert len(json.dumps(attributes)) > 1_000_000


@pg
def test_condition_tested__answered_by_the_database_every_time(
    memory, decider, django_assert_num_queries
):
    # Given a targeted experiment whose condition the unit's stored attributes pass, and a
    # unit outside its coverage (a null answer: nothing stored)
    experiment = make_experiment(decider.product, "etch", coverage=0.5)
    decider.change(
        experiment, conditions=[{"attribute": "line", "operator": "in", "values": ["A"]}]
    )
    make_experiment(decider.product, "anneal")  # so that the unit is stored
    unit = unit_for(experiment, None)
    decider.decide(unit)
    forgotten = metrics.known_invalidated_units._value.get()
    unit_set_attributes(unit=Unit.objects.get(key=unit), attributes={"line": "A"})
    wait_until(lambda: metrics.known_invalidated_units._value.get() > forgotten)
    assert decider.decide(unit)["etch"] is None
    # Then memory keeps nothing for it (the answer needed the attributes) and each decision
    # reads the database
    assert len(memory) == 0
    with django_assert_num_queries(1):
        assert decider.decide(unit)["etch"] is None


@pg
def test_memory_budget__setting_bounds_what_a_worker_keeps(settings, decider):
    from decide import memory as decide_memory

    requires_postgres()  # the memory listens for PostgreSQL's notifications

    settings.DECIDE_KNOWN_UNITS = True
    settings.DECIDE_KNOWN_UNITS_MAX_MIB = 16 / 1024  # 16 KiB
    decide_memory.reset()
    try:
        known = decide_memory.known_units()
        wait_until(lambda: known._listening and known._ready)
        make_experiment(decider.product, "etch")
        evicted = _evictions("bytes")
        units = [f"SN-{i}" for i in range(60)]
        decider.batch(units)
        for unit in units:
            decider.decide(unit)
        assert 0 < len(known) < 60
        assert known.bytes <= 16 * 1024
        assert _evictions("bytes") > evicted
    finally:
        decide_memory.reset()


@pg
def test_memory_keeps_the_digest_the_database_holds_not_the_key(memory, decider):
    make_experiment(decider.product, "etch")
    _remember(memory, decider, "SN-1")
    stored = ClientKey.objects.get(product=decider.product).digest
    kept = [entry for entry in memory.entries._lru.values() if isinstance(entry, KeyEntry)]
    assert [entry.digest for entry in kept] == [bytes.fromhex(stored)]
    assert decider.secret not in repr(list(memory.entries._lru.values()))


@pg
def test_wrong_secret__same_path_whether_or_not_the_unit_is_remembered(memory, decider):
    # Given a remembered unit, and a key with the right prefix and a wrong secret
    make_experiment(decider.product, "etch")
    _remember(memory, decider, "SN-1")
    right = parse_client_key(decider.secret)
    forged = parse_client_key(f"lck_{right.prefix}_{'x' * 43}")
    looked_up: list[str] = []
    holds, unit = memory.entries.holds, memory.entries.unit
    memory.entries.holds = lambda key, u: looked_up.append(u) or holds(key, u)
    memory.entries.unit = lambda key, u: looked_up.append(u) or unit(key, u)
    try:
        # When decide (through Django or the hot path) asks memory, for both units
        for name in ("SN-1", "SN-never"):
            assert memory.get(forged, name) is None
        # Then memory was never asked about either unit: the key check failed first
        assert looked_up == []
        # And the right key finds the remembered one
        assert memory.get(right, "SN-1") is not None
    finally:
        memory.entries.holds, memory.entries.unit = holds, unit
    # And the forged key is refused by the database, remembered unit or not
    for name in ("SN-1", "SN-never"):
        key = forged.secret
        assert decider.post("/api/v1/decide", {"unit": name}, key=key).status_code == 401


@pg
def test_product_write__other_products_memory_kept(memory, decider):
    from lab.services.credentials import client_key_create
    from tests.decide.conftest import DecideClient
    from tests.factories import ProductFactory

    # Given two products, each with a remembered unit
    other_product = ProductFactory(key="other")
    other = DecideClient(
        other_product,
        client_key_create(product=other_product, name="k").secret,
        decider.client,
    )
    experiment = make_experiment(decider.product, "etch")
    make_experiment(other_product, "etch")
    _remember(memory, decider, "SN-1")
    _remember(memory, other, "SN-1")
    assert len(memory) == 2
    forgotten = metrics.known_invalidated_products._value.get()
    # When the first product's experiment changes
    decider.change(experiment, coverage=0.9)
    wait_until(lambda: metrics.known_invalidated_products._value.get() > forgotten)
    # Then only its entries are forgotten
    assert len(memory) == 1
    assert memory.get(parse_client_key(other.secret), "SN-1") is not None
    assert memory.get(parse_client_key(decider.secret), "SN-1") is None


# --- Data replaced beneath the memory, where no trigger sees it.


def _force_silently(experiment, variant_key: str, sql_around: tuple[str, str]) -> None:
    """Move every stored assignment of `experiment` to `variant_key` between two statements
    that keep the triggers from seeing it, in one transaction."""
    before, after = sql_around
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(before)
        cursor.execute(
            "UPDATE lab_assignment SET variant_id = %s, source = 'forced' WHERE experiment_id = %s",
            [experiment.variants.get(key=variant_key).id, experiment.id],
        )
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending events before the DDL
        cursor.execute(after)


def _identity_changes() -> float:
    return metrics.known_invalidated_all._value.get()


@pg
@pytest.mark.parametrize(
    "sql_around",
    [
        pytest.param(
            (
                "ALTER TABLE lab_assignment DISABLE TRIGGER USER",
                "ALTER TABLE lab_assignment ENABLE TRIGGER USER",
            ),
            id="triggers disabled and enabled again",
        ),
        pytest.param(
            (
                "DROP TRIGGER lab_assignment_decide_notify_updated ON lab_assignment",
                "CREATE TRIGGER lab_assignment_decide_notify_updated AFTER UPDATE ON "
                "lab_assignment REFERENCING OLD TABLE AS changed FOR EACH STATEMENT "
                "EXECUTE FUNCTION lab_decide_notify_assignments_changed()",
            ),
            id="trigger dropped and created again",
        ),
    ],
)
def test_write_no_trigger_sees__memory_emptied_within_the_bound(memory, decider, sql_around):
    # Given a remembered unit
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    _remember(memory, decider, unit)
    assert len(memory) == 1
    changes = _identity_changes()
    # When its assignment is changed where no trigger sees it
    _force_silently(experiment, "b", sql_around)
    committed = time.monotonic()
    # Then a decision that starts the staleness bound later answers what the database holds
    time.sleep(max(0.0, committed + STALENESS_BOUND_SECONDS - time.monotonic()))
    assert decider.decide(unit)["etch"] == "b"
    # because the memory was emptied on seeing the data replaced
    wait_until(lambda: _identity_changes() > changes, timeout=2)


@pg
def test_table_without_its_trigger__nothing_remembered_until_it_is_back(memory, decider):
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE lab_unit DISABLE TRIGGER USER")
    try:
        wait_until(lambda: not memory._ready, timeout=2)
        _decide_twice(decider, unit)
        assert len(memory) == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE lab_unit ENABLE TRIGGER USER")
    wait_until(lambda: memory._ready, timeout=2)
    _remember(memory, decider, unit)
    assert len(memory) == 1


@pg
def test_truncate__memory_emptied(memory, decider):
    experiment = make_experiment(decider.product, "etch")
    _remember(memory, decider, unit_for(experiment, "a"))
    assert len(memory) == 1
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE lab_assignment")
    wait_until(lambda: len(memory) == 0, timeout=2)
