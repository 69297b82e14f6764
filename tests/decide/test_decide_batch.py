"""POST /api/v1/decide/batch: many units per call, set-based, in request order."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from lab.models import Assignment, AuditEvent, Unit
from tests.decide.conftest import expected_variant, make_experiment, unit_for, variant


def test_batch__answers_in_request_order_duplicates_included(decider):
    # Given
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    units = ["SN-3", "SN-1", "SN-3", "SN-2", "SN-1"]
    # When
    response = decider.post("/api/v1/decide/batch", {"units": units})
    # Then
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert [d["unit"] for d in decisions] == units
    for decision in decisions:
        assert decision["variants"] == {"etch": expected_variant(etch, decision["unit"])}
    assert Unit.objects.count() == 3
    assert Assignment.objects.count() == 3


def test_batch__same_answers_as_single_decides(decider):
    make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal", [("x", 1), ("y", 2), ("z", 3)], coverage=0.7)
    units = [f"SN-{i}" for i in range(30)]
    singles = {unit: decider.decide(unit) for unit in units[:15]}
    batch = {d["unit"]: d["variants"] for d in decider.batch(units)}
    assert {unit: batch[unit] for unit in singles} == singles
    # And the units first seen in the batch are sticky afterwards
    assert {unit: decider.decide(unit) for unit in units[15:]} == {
        unit: batch[unit] for unit in units[15:]
    }


def test_batch__filters_apply_to_every_unit(decider):
    make_experiment(decider.product, "etch-time", step="etch")
    make_experiment(decider.product, "anneal-temp", step="anneal")
    by_step = decider.batch(["SN-1", "SN-2"], step="etch")
    assert [list(d["variants"]) for d in by_step] == [["etch-time"], ["etch-time"]]
    by_key = decider.batch(["SN-1"], experiments=["anneal-temp", "nope"])
    assert list(by_key[0]["variants"]) == ["anneal-temp", "nope"]
    assert by_key[0]["variants"]["nope"] is None


def test_batch__empty__empty_decisions(decider):
    assert decider.batch([]) == []


def test_batch__1000_units__answered(decider):
    make_experiment(decider.product, "etch")
    decisions = decider.batch([f"SN-{i}" for i in range(1000)])
    assert len(decisions) == 1000
    assert Assignment.objects.count() == 1000


def test_batch__1001_units__413_nothing_stored(decider):
    make_experiment(decider.product, "etch")
    response = decider.post("/api/v1/decide/batch", {"units": [f"SN-{i}" for i in range(1001)]})
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]
    assert not Unit.objects.exists()


def test_batch__1001_units_bad_key__401(decider):
    units = [f"SN-{i}" for i in range(1001)]
    response = decider.post("/api/v1/decide/batch", {"units": units}, key="lck_0123456789ab_nope")
    assert response.status_code == 401


def test_batch__one_bad_unit__422_nothing_stored(decider):
    make_experiment(decider.product, "etch")
    response = decider.post("/api/v1/decide/batch", {"units": ["SN-1", "bad/unit"]})
    assert response.status_code == 422
    assert response.json()["detail"]
    assert not Unit.objects.exists()


def test_batch__fixed_number_of_statements_whatever_the_size(decider):
    # Given two experiments and some units known already
    make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal")
    decider.batch([f"SN-{i}" for i in range(5)])

    def statements(units: list[str]) -> int:
        with CaptureQueriesContext(connection) as queries:
            decider.batch(units)
        return len(queries)

    # Then a batch of 20 and one of 400 (half new units) cost the same number of statements
    small = statements([f"SN-{i}" for i in range(10)] + [f"A-{i}" for i in range(10)])
    large = statements([f"SN-{i}" for i in range(200)] + [f"B-{i}" for i in range(200)])
    assert small == large
    # And a warm batch is a single read
    assert statements([f"B-{i}" for i in range(200)]) == 1


def test_batch__variant_removed__rebuckets_every_unit_at_once(decider):
    # Given 30 units, some on "b"
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    units = [f"SN-{i}" for i in range(30)]
    before = {d["unit"]: d["variants"]["etch"] for d in decider.batch(units)}
    on_b = [unit for unit, v in before.items() if v == "b"]
    assert on_b
    # When
    decider.change(variant(etch, "b"), status="removed")
    with CaptureQueriesContext(connection) as queries:
        after = {d["unit"]: d["variants"]["etch"] for d in decider.batch(units)}
    # Then only the units on "b" moved, each audited once, in a fixed number of statements
    assert {u for u in units if after[u] != before[u]} == set(on_b)
    assert all(after[u] == expected_variant(etch, u) for u in on_b)
    assert AuditEvent.objects.filter(action="rebucketed").count() == len(on_b)
    assert Assignment.objects.filter(source="rebucketed").count() == len(on_b)
    assert len(queries) <= 8  # read, compile, update, audit insert, transaction


def test_batch__unit_for_helper_agrees_with_server(decider):
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 3)], coverage=0.8)
    picks = {key: unit_for(etch, key) for key in ("a", "b", None)}
    decisions = decider.batch(list(picks.values()))
    assert [d["variants"]["etch"] for d in decisions] == list(picks)


def test_batch__new_unit_beside_a_rebucketed_one__both_answered(decider):
    # Given a unit whose variant is then removed
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    old = decider.batch(["SN-old"])[0]["variants"]["etch"]
    decider.change(variant(etch, old), status="removed")
    # When one batch holds a brand-new unit and the unit to re-bucket
    response = decider.post("/api/v1/decide/batch", {"units": ["SN-new", "SN-old"]})
    # Then both are answered and stored
    assert response.status_code == 200, response.content
    answers = {d["unit"]: d["variants"]["etch"] for d in response.json()["decisions"]}
    assert answers["SN-old"] != old
    assert answers["SN-new"] == expected_variant(etch, "SN-new")
    stored = dict(Assignment.objects.values_list("unit__key", "source"))
    assert stored == {"SN-new": "hash", "SN-old": "rebucketed"}
