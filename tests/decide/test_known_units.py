"""Known units answered from a worker's memory (decide.memory), kept fresh by LISTEN/NOTIFY.

PostgreSQL only, and committed for real (transactional tests): notifications are sent at
commit. Each test starts this process's listener and waits until it listens.
"""

import threading
import time

import psycopg
import pytest
from django.db import connection, transaction

from decide import metrics, store
from decide.auth import parse_client_key
from decide.memory import (
    APPLICATION_NAME,
    CHANNEL,
    HEARTBEAT_SECONDS,
    STALENESS_BOUND_SECONDS,
    listener_connection_params,
)
from lab.models import Assignment, Product, Unit
from lab.services.assignments import assignment_force
from lab.services.credentials import client_key_revoke
from lab.services.units import unit_set_attributes
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment, remember, unit_for, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener():
    """A LISTEN connection of the test's own, to read the triggers' notifications."""
    requires_postgres()
    with psycopg.connect(**listener_connection_params(), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")

        def received(wait: float = 0.5) -> list[str]:
            return [n.payload for n in conn.notifies(timeout=wait)]

        yield received


def _hits() -> float:
    return metrics.known_hit._value.get()


def _settled(memory) -> None:
    """Until every notification committed so far is applied: a heartbeat sent after now has
    been applied, and notifications arrive in commit order."""
    now = time.monotonic()
    wait_until(lambda: memory._confirmed_at > now)


def _units_forgotten() -> float:
    return metrics.known_invalidated_units._value.get()


def test_known_unit__answered_from_memory_without_a_query(
    memory, decider, django_assert_num_queries
):
    make_experiment(decider.product, "etch")
    _settled(memory)  # the setup's notifications applied: none forgets what is read below
    first = decider.decide("SN-1")  # stores the assignment
    assert decider.decide("SN-1") == first  # read from the database, then remembered
    hits = _hits()
    with django_assert_num_queries(0):
        assert decider.decide("SN-1") == first
    assert _hits() == hits + 1


def test_new_unit__learnt_from_what_its_first_decision_stored(
    memory, decider, django_assert_num_queries
):
    make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal")
    _serve_the_product(decider, memory)
    learnt = metrics.known_learnt_new._value.get()
    first = decider.decide("SN-1")
    # Not from what it read (not the truth after its write), but from the notification its
    # write sent, as every other worker learns it
    wait_until(lambda: len(memory) == 2)  # SN-1 is in memory only if it was learnt
    assert metrics.known_learnt_new._value.get() >= learnt + 1
    hits = _hits()
    with django_assert_num_queries(0):
        assert decider.decide("SN-1") == first
    assert _hits() == hits + 1


def test_batch_first_decisions__not_learnt__a_single_first_decision_is(memory, decider):
    """A batch's units (up to 1,000 a call) are not sent to every worker's memory, where they
    would evict the units lines are deciding again; one unit's first decision is."""
    make_experiment(decider.product, "etch")
    _serve_the_product(decider, memory)
    learnt = metrics.known_learnt_new._value.get()
    decider.batch([f"SN-batch-{i}" for i in range(3)])
    _settled(memory)
    assert (len(memory), metrics.known_learnt_new._value.get()) == (1, learnt)
    decider.decide("SN-single")
    wait_until(lambda: metrics.known_learnt_new._value.get() == learnt + 1)
    assert len(memory) == 2


def _serve_the_product(decider, memory) -> None:
    """Have this worker hold the product's key, as one that has served it does (a first
    decision's read can be overtaken by the setup's notifications and not keep it)."""
    decider.decide("SN-0")
    decider.decide("SN-0")
    wait_until(lambda: len(memory) == 1)
    time.sleep(0.3)  # and its first decision's notification applied, if it is to be learnt


def test_known_unit_new_experiment__added_to_what_memory_holds(
    memory, decider, django_assert_num_queries
):
    make_experiment(decider.product, "etch")
    _settled(memory)
    decider.decide("SN-1")
    _settled(memory)  # its first decision learnt from its own notification
    assert len(memory) == 1
    make_experiment(decider.product, "bake")  # a new config: the product's units forgotten
    _settled(memory)
    assert len(memory) == 0
    assert remember(memory, decider, "SN-1", experiments=["etch"])  # read, without bake
    assert len(memory) == 1
    added = metrics.known_learnt_added._value.get()
    first = decider.decide("SN-1", experiments=["bake"])  # stores bake's assignment
    wait_until(lambda: metrics.known_learnt_added._value.get() == added + 1)
    with django_assert_num_queries(0):
        both = decider.decide("SN-1")
    assert both["bake"] == first["bake"]


def test_learnt_unit_changed_after__forgotten_in_commit_order(memory, decider):
    """What a first decision stored is learnt as of its commit: a change committed after
    it comes after it, and forgets it."""
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    forgotten = _units_forgotten()
    decider.decide(unit)
    assignment_force(experiment=experiment, unit_key=unit, variant_key="b", actor="test")
    wait_until(lambda: _units_forgotten() > forgotten)
    assert len(memory) == 0
    assert decider.decide(unit)["etch"] == "b"


def test_learning__only_for_a_product_whose_key_is_held(memory, decider):
    """Another product's first decisions (another tenant's, on other workers) take no room
    in a worker that never served that product."""
    make_experiment(decider.product, "etch")
    learnt = metrics.known_learnt_new._value.get()
    memory.apply([f"l:{decider.product.id + 1000}:1:n:1.1:SN-elsewhere"])
    assert (len(memory), metrics.known_learnt_new._value.get()) == (0, learnt)


def test_learnt_message_not_understood__forgets_everything(memory, decider):
    make_experiment(decider.product, "etch")
    _serve_the_product(decider, memory)
    memory.apply(["l:1:2:n:not-pairs:SN-1"])
    assert len(memory) == 0


def test_forced_assignment__forgotten_and_answered_as_forced(memory, decider):
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    _settled(memory)  # the setup's notifications applied: none forgets what is read below
    decider.decide(unit)
    remember(memory, decider, unit)
    assert len(memory) == 1
    before = _units_forgotten()
    assignment_force(experiment=experiment, unit_key=unit, variant_key="b", actor="test")
    wait_until(lambda: _units_forgotten() > before)
    assert len(memory) == 0
    assert decider.decide(unit)["etch"] == "b"


def test_revoked_key__next_decision_is_401(memory, decider):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    decider.decide("SN-1")
    assert decider.post("/api/v1/decide", {"unit": "SN-1"}).status_code == 200
    key = decider.product.client_keys.get()
    client_key_revoke(product=decider.product, key_id=key.id)
    wait_until(lambda: len(memory) == 0)
    assert decider.post("/api/v1/decide", {"unit": "SN-1"}).status_code == 401


def test_paused_experiment__forgotten_with_everything(memory, decider):
    experiment = make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    decider.decide("SN-1")
    decider.change(experiment, status="disabled")
    wait_until(lambda: len(memory) == 0)
    assert decider.decide("SN-1") == {}  # a paused experiment is no longer listed


def test_wrong_secret_with_a_known_prefix__checked_by_the_database(memory, decider):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    decider.decide("SN-1")
    prefix = parse_client_key(decider.secret).prefix
    forged = f"lck_{prefix}_{'x' * 43}"
    assert decider.post("/api/v1/decide", {"unit": "SN-1"}, key=forged).status_code == 401


def test_condition_miss__never_answered_from_memory(memory, decider, django_assert_num_queries):
    experiment = make_experiment(decider.product, "etch")
    decider.change(
        experiment, conditions=[{"attribute": "line", "operator": "in", "values": ["A"]}]
    )
    # A unit that exists (stored by another experiment's decision) but fails the condition
    make_experiment(decider.product, "anneal")
    decider.decide("SN-1", attributes={"line": "B"})
    decider.decide("SN-1", attributes={"line": "B"})
    # Its null answer depends on what is sent, and another worker may store a variant for
    # it meanwhile: every such decision asks the database.
    with django_assert_num_queries(1):
        assert decider.decide("SN-1", attributes={"line": "B"})["etch"] is None


def test_listener_lost__database_answers_until_it_listens_again(memory, decider):
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    decider.decide(unit)
    decider.decide(unit)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
    wait_until(lambda: not memory._listening)
    assert len(memory) == 0
    # A change made while nobody listens: no notification reaches this worker
    Assignment.objects.filter(experiment=experiment).update(
        variant=experiment.variants.get(key="b"), source="forced"
    )
    assert decider.decide(unit)["etch"] == "b"  # from the database
    wait_until(lambda: memory._listening, timeout=10)
    decider.decide(unit)
    assert decider.decide(unit)["etch"] == "b"


def test_read_while_a_notification_is_applied__not_kept(memory, decider):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    decider.decide("SN-1")
    wait_until(lambda: len(memory) == 1)  # learnt or read
    memory.apply(["*"])
    generation = memory.generation()
    memory.apply(["u:999999999"])  # anything applied between the read and the put
    state, units = store.read_units(parse_client_key(decider.secret), ["SN-1"])
    memory.put(parse_client_key(decider.secret), "SN-1", state, units["SN-1"], generation)
    assert len(memory) == 0


def test_malformed_notification__forgets_everything(memory, decider):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    remember(memory, decider, "SN-1")
    assert len(memory) == 1
    memory.apply(["u:12,not-a-number"])
    assert len(memory) == 0


# --- The triggers of migrations 0005 and 0007: what each write notifies.


def test_triggers__decide_first_decisions_notify_only_what_they_stored(listener, decider):
    """No trigger fires for them (nothing a memory holds changes): their own statement
    says what they stored, for every worker to learn (decide.memory.listener)."""
    etch = make_experiment(decider.product, "etch")
    anneal = make_experiment(decider.product, "anneal")
    listener(0.2)  # the setup's own notifications
    variants = decider.decide("SN:1")
    unit = Unit.objects.get(key="SN:1")
    pairs = ",".join(
        f"{e.id}.{e.variants.get(key=variants[e.key]).id}"
        for e in sorted((etch, anneal), key=lambda e: e.id)
    )
    assert listener(0.3) == [f"l:{decider.product.id}:{unit.id}:n:{pairs}:SN:1"]
    # A known unit's new experiment: what was added, marked so
    bake = make_experiment(decider.product, "bake")
    listener(0.2)
    baked = decider.decide("SN:1", experiments=["bake"])["bake"]
    added = f"{bake.id}.{bake.variants.get(key=baked).id}"
    assert listener(0.3) == [f"l:{decider.product.id}:{unit.id}:m:{added}:SN:1"]
    # A decision that stores nothing says nothing
    decider.decide("SN:1")
    assert listener(0.3) == []


def test_triggers__forcing_names_the_unit(listener, decider):
    experiment = make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    unit_id = Unit.objects.get(key="SN-1").id
    listener(0.2)
    assignment_force(experiment=experiment, unit_key="SN-1", variant_key="b", actor="t")
    assert f"u:{unit_id}" in listener()


def test_triggers__attributes_name_the_unit_and_config_changes_the_product(listener, decider):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    unit = Unit.objects.get(key="SN-1")
    listener(0.2)
    unit_set_attributes(unit=unit, attributes={"line": "A"})
    assert listener() == [f"u:{unit.id}"]
    Product.objects.filter(pk=decider.product.pk).update(name="renamed")
    assert listener() == [f"p:{decider.product.pk}"]


def test_triggers__deleting_many_assignments_is_one_notification(listener, decider):
    experiment = make_experiment(decider.product, "etch")
    decider.batch([f"SN-{i}" for i in range(5)])
    ids = sorted(Unit.objects.filter(key__startswith="SN-").values_list("id", flat=True))
    listener(0.2)
    with transaction.atomic():
        Assignment.objects.filter(experiment=experiment).delete()
    (payload,) = listener()
    assert payload.startswith("u:")
    assert sorted(int(i) for i in payload[2:].split(",")) == ids


def test_triggers__more_than_200_units_forget_their_product(listener, decider):
    experiment = make_experiment(decider.product, "etch")
    decider.batch([f"SN-{i}" for i in range(201)])
    listener(0.2)
    Assignment.objects.filter(experiment=experiment).update(source="forced")
    assert listener() == [f"p:{decider.product.pk}"]


def test_concurrent_changes__no_stale_answer_after_the_change_is_applied(memory, decider):
    """Forced back and forth while four threads decide: once a change is applied, no
    decision that starts afterwards (and ends before the next change starts: one that
    overlaps it may see either) answers the earlier variant."""
    experiment = make_experiment(decider.product, "etch")
    unit = unit_for(experiment, "a")
    decider.decide(unit)
    decided: list[tuple[float, float, str]] = []  # (started, finished, variant)
    stop = threading.Event()

    def decide_forever():
        from django.test import Client

        client = Client()
        while not stop.is_set():
            started = time.monotonic()
            response = client.post(
                "/api/v1/decide",
                {"unit": unit},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {decider.secret}",
            )
            decided.append((started, time.monotonic(), response.json()["variants"]["etch"]))
        connection.close()

    threads = [threading.Thread(target=decide_forever) for _ in range(4)]
    for thread in threads:
        thread.start()
    applied_at: list[tuple[float, str]] = []  # (when a change was applied, its variant)
    changes_started: list[float] = []
    try:
        for variant_key in ("b", "a", "b", "a", "b"):
            before = _units_forgotten()
            changes_started.append(time.monotonic())
            assignment_force(
                experiment=experiment, unit_key=unit, variant_key=variant_key, actor="t"
            )
            wait_until(lambda before=before: _units_forgotten() > before)
            applied = time.monotonic()
            applied_at.append((applied, variant_key))
            # Until decisions started after it have ended (a fixed pause can see none of
            # them on a busy machine)
            time.sleep(0.05)
            wait_until(
                lambda applied=applied: sum(started > applied for started, _, _ in decided) >= 2
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(decided) > 20
    # Between a change's being applied and the start of the next change
    next_started = [*changes_started[1:], float("inf")]
    for (applied, variant_key), until in zip(applied_at, next_started, strict=True):
        answers = {v for started, finished, v in decided if applied < started and finished < until}
        assert answers == {variant_key}, (variant_key, answers)


def test_heartbeat_not_back_within_the_bound__database_answers(
    memory, decider, django_assert_num_queries
):
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    decider.decide("SN-1")
    # Its first decision's notification (learnt) applied: a request meeting it pending
    # would wait for it, and might ask the database
    time.sleep(0.3)
    with django_assert_num_queries(0):
        decider.decide("SN-1")
    # As if the listener had not heard back from PostgreSQL for longer than the bound
    memory._confirmed_at = time.monotonic() - STALENESS_BOUND_SECONDS - 1
    assert memory.get(parse_client_key(decider.secret), "SN-1") is None
    # and once a heartbeat is back, memory answers again
    wait_until(lambda: time.monotonic() - memory._confirmed_at < HEARTBEAT_SECONDS * 4)
    with django_assert_num_queries(0):
        decider.decide("SN-1")
