"""Assignments: operators force units (one, or a whole lot) onto a variant."""

import threading
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client

from lab.models import Assignment, AssignmentSource, AuditEvent, Product, Status, Unit
from tests.conftest import ApiClient, requires_postgres
from tests.factories import AssignmentFactory, ExperimentFactory, UnitFactory, VariantFactory

ASSIGNMENTS = "/products/widget/experiments/etch/assignments"


@pytest.fixture
def widget(product) -> Product:
    return Product.objects.get(key=product["key"], user__username="alice")


@pytest.fixture
def etch(widget):
    experiment = ExperimentFactory(product=widget, key="etch")
    VariantFactory(experiment=experiment, key="a", is_control=True)
    VariantFactory(experiment=experiment, key="b")
    VariantFactory(experiment=experiment, key="closed", status=Status.DISABLED)
    VariantFactory(experiment=experiment, key="gone", status=Status.REMOVED)
    return experiment


def unit_path(key: str) -> str:
    return f"{ASSIGNMENTS}/{quote(key, safe='')}"


def rows(variant: str, keys) -> dict:
    return {"assignments": [{"unit": key, "variant": variant} for key in keys]}


def stored(experiment) -> dict[str, tuple[str, str]]:
    return {
        a.unit.key: (a.variant.key, a.source)
        for a in Assignment.objects.filter(experiment=experiment).select_related("unit", "variant")
    }


def test_assignments__bulk_force__creates_units_and_forced_assignments(tenant, etch):
    # Given SN-1 decided by hash onto a; SN-2 and SN-3 unknown so far
    AssignmentFactory(
        experiment=etch,
        unit=UnitFactory(product=etch.product, key="SN-1"),
        variant=etch.variants.get(key="a"),
    )
    # When the lot is forced onto b
    response = tenant.post(ASSIGNMENTS, rows("b", ["SN-1", "SN-2", "SN-3"]))
    # Then
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 2, "updated": 1}
    assert stored(etch) == {key: ("b", AssignmentSource.FORCED) for key in ("SN-1", "SN-2", "SN-3")}
    assert Unit.objects.count() == 3


def test_assignments__bulk_force__audits_each_unit_that_changes_variant(tenant, etch):
    # Given SN-1 on a and SN-2 on b
    tenant.post(ASSIGNMENTS, {"assignments": [{"unit": "SN-1", "variant": "a"}]})
    tenant.post(ASSIGNMENTS, {"assignments": [{"unit": "SN-2", "variant": "b"}]})
    AuditEvent.objects.all().delete()
    # When the three are forced onto b
    tenant.post(ASSIGNMENTS, rows("b", ["SN-1", "SN-2", "SN-3"]))
    # Then SN-1 (a -> b) and SN-3 (none -> b) are audited; SN-2 stayed on b
    events = {
        e.object_key: (e.action, e.actor, e.object_type, e.from_value, e.to_value)
        for e in AuditEvent.objects.all()
    }
    assert events == {
        "etch/SN-1": ("forced", "alice", "assignment", "a", "b"),
        "etch/SN-3": ("forced", "alice", "assignment", "", "b"),
    }


def test_assignments__force_same_variant_again__updated_and_not_audited_twice(tenant, etch):
    body = rows("b", ["SN-1"])
    assert tenant.post(ASSIGNMENTS, body).json() == {"created": 1, "updated": 0}
    assert tenant.post(ASSIGNMENTS, body).json() == {"created": 0, "updated": 1}
    assert AuditEvent.objects.count() == 1


def test_assignments__force_onto_closed_variant__allowed(tenant, etch):
    # A closed variant takes no new units by hash, but an operator may put a lot there
    response = tenant.post(ASSIGNMENTS, rows("closed", ["SN-1"]))
    assert response.status_code == 200, response.content
    assert stored(etch) == {"SN-1": ("closed", "forced")}


@pytest.mark.parametrize(
    ("bad_row", "field", "kind"),
    [
        ({"unit": "SN-9", "variant": "nope"}, "variant", "unknown_variant"),
        ({"unit": "SN-9", "variant": "gone"}, "variant", "removed_variant"),
        ({"unit": "SN-1", "variant": "a"}, "unit", "duplicate_unit"),
    ],
)
def test_assignments__one_bad_row__400_naming_it_and_nothing_written(
    tenant, etch, bad_row, field, kind
):
    # Given a batch whose row 2 is bad
    body = {"assignments": [{"unit": "SN-1", "variant": "b"}, {"unit": "SN-2", "variant": "b"}]}
    body["assignments"].append(bad_row)
    # When
    response = tenant.post(ASSIGNMENTS, body)
    # Then
    assert response.status_code == 400, response.content
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "assignments", 2, field]
    assert problem["type"] == kind
    assert problem["msg"].startswith("assignments[2]: ")
    assert Assignment.objects.count() == Unit.objects.count() == AuditEvent.objects.count() == 0


def test_assignments__many_bad_rows__each_named(tenant, etch):
    body = rows("nope", [f"SN-{i}" for i in range(3)])
    detail = tenant.post(ASSIGNMENTS, body).json()["detail"]
    assert [problem["loc"][2] for problem in detail] == [0, 1, 2]


def test_assignments__bad_keys__422_naming_the_row(tenant, etch):
    for bad_row in [
        {"unit": "SN 1 ", "variant": "b"},
        {"unit": "a/b", "variant": "b"},
        {"unit": "SN-1", "variant": "Not A Key"},
        {"unit": "SN-1"},
        {"unit": "SN-1", "variant": "b", "extra": 1},
    ]:
        body = {"assignments": [{"unit": "SN-0", "variant": "b"}, bad_row]}
        response = tenant.post(ASSIGNMENTS, body)
        assert response.status_code == 422, (bad_row, response.content)
        assert 1 in response.json()["detail"][0]["loc"]
    assert Assignment.objects.count() == Unit.objects.count() == 0


def test_assignments__more_than_10000__413_and_nothing_written(tenant, etch):
    response = tenant.post(ASSIGNMENTS, rows("b", [f"SN-{i}" for i in range(10_001)]))
    assert response.status_code == 413
    assert "10,000" in response.json()["detail"]
    assert Assignment.objects.count() == 0


def test_assignments__removed_experiment__400(tenant, etch):
    etch.status = Status.REMOVED
    etch.save()
    assert tenant.post(ASSIGNMENTS, rows("b", ["SN-1"])).status_code == 400
    assert tenant.put(unit_path("SN-1"), {"variant": "b"}).status_code == 400
    assert Assignment.objects.count() == 0


def test_assignments__paused_experiment__still_forceable(tenant, etch):
    etch.status = Status.DISABLED
    etch.save()
    assert tenant.post(ASSIGNMENTS, rows("b", ["SN-1"])).status_code == 200


def test_assignments__unknown_experiment__404(tenant, etch):
    response = tenant.post("/products/widget/experiments/nope/assignments", rows("b", ["SN-1"]))
    assert response.status_code == 404
    assert tenant.get("/products/widget/experiments/nope/assignments").status_code == 404


def test_assignments__list__paginated_with_variant_filter(tenant, etch):
    tenant.post(ASSIGNMENTS, rows("a", ["SN-1", "SN-2"]))
    tenant.post(ASSIGNMENTS, rows("b", ["SN-3", "SN-4", "SN-5"]))
    # When
    page = tenant.get(ASSIGNMENTS, variant="b", limit=2, offset=1).json()
    # Then
    assert page["count"] == 3
    assert [(item["unit"], item["variant"]) for item in page["items"]] == [
        ("SN-4", "b"),
        ("SN-5", "b"),
    ]
    item = page["items"][0]
    assert item["source"] == "forced"
    assert {"created_at", "updated_at"} <= item.keys()
    assert tenant.get(ASSIGNMENTS).json()["count"] == 5
    assert tenant.get(ASSIGNMENTS, variant="nope").json()["count"] == 0
    assert tenant.get(ASSIGNMENTS, variant="b\x00").status_code == 422


def test_assignments__get_one__404_until_assigned(tenant, etch):
    assert tenant.get(unit_path("SN-1")).status_code == 404
    UnitFactory(product=etch.product, key="SN-1")
    assert tenant.get(unit_path("SN-1")).status_code == 404
    tenant.post(ASSIGNMENTS, rows("a", ["SN-1"]))
    response = tenant.get(unit_path("SN-1"))
    assert response.status_code == 200
    assert (response.json()["unit"], response.json()["variant"]) == ("SN-1", "a")


def test_assignments__put__201_then_200_and_audited(tenant, etch):
    # When a new unit is forced, then forced elsewhere
    created = tenant.put(unit_path("ユニット-1"), {"variant": "a"})
    updated = tenant.put(unit_path("ユニット-1"), {"variant": "b"})
    # Then
    assert created.status_code == 201, created.content
    assert created.json()["unit"] == "ユニット-1"
    assert updated.status_code == 200
    assert (updated.json()["variant"], updated.json()["source"]) == ("b", "forced")
    assert updated.json()["created_at"] == created.json()["created_at"]
    assert tenant.get(unit_path("ユニット-1")).json()["variant"] == "b"
    trail = [(e.from_value, e.to_value) for e in AuditEvent.objects.order_by("id")]
    assert trail == [("", "a"), ("a", "b")]


def test_assignments__put_bad_input__4xx_and_nothing_written(tenant, etch):
    assert tenant.put(unit_path("SN-1"), {"variant": "gone"}).status_code == 400
    assert tenant.put(unit_path("SN-1"), {"variant": "nope"}).status_code == 400
    assert tenant.put(unit_path("SN-1"), {"variant": "B!"}).status_code == 422
    assert tenant.put(unit_path("SN-1"), {}).status_code == 422
    assert tenant.put(unit_path(" SN-1"), {"variant": "b"}).status_code == 422
    assert Unit.objects.count() == Assignment.objects.count() == 0


def test_assignments__another_tenant__404_on_every_route(tenant, other_tenant, etch):
    tenant.post(ASSIGNMENTS, rows("a", ["SN-1"]))
    assert other_tenant.get(ASSIGNMENTS).status_code == 404
    assert other_tenant.post(ASSIGNMENTS, rows("b", ["SN-1"])).status_code == 404
    assert other_tenant.get(unit_path("SN-1")).status_code == 404
    assert other_tenant.put(unit_path("SN-1"), {"variant": "b"}).status_code == 404
    assert stored(etch) == {"SN-1": ("a", "forced")}


def test_assignments__bulk_10000__fixed_number_of_queries(
    tenant, etch, django_assert_max_num_queries
):
    requires_postgres()  # SQLite splits bulk statements into batches of 999 parameters
    # token, product, experiment; then in a savepoint: variants and the five statements
    # of the write (units insert, units lock, assignments lock, upsert, audit)
    with django_assert_max_num_queries(11):
        response = tenant.post(ASSIGNMENTS, rows("b", [f"SN-{i}" for i in range(10_000)]))
    assert response.json() == {"created": 10_000, "updated": 0}
    with django_assert_max_num_queries(11):
        response = tenant.post(ASSIGNMENTS, rows("a", [f"SN-{i}" for i in range(10_000)]))
    assert response.json() == {"created": 0, "updated": 10_000}
    assert AuditEvent.objects.count() == 20_000


@pytest.mark.django_db(transaction=True)
def test_assignments__concurrent_overlapping_batches__consistent(tenant, etch):
    requires_postgres()
    # Given two operators forcing overlapping lots at the same instant: SN-0..199 onto a,
    # SN-100..299 onto b (SN-100..199 already exist, decided onto b)
    for i in range(100, 200):
        AssignmentFactory(
            experiment=etch,
            unit=UnitFactory(product=etch.product, key=f"SN-{i}"),
            variant=etch.variants.get(key="b"),
        )
    lots = {"a": range(0, 200), "b": range(100, 300)}
    start = threading.Barrier(len(lots))
    answers: dict[str, tuple[int, dict]] = {}

    def force(variant: str) -> None:
        try:
            client = ApiClient(token=tenant.token, client=Client())
            start.wait()
            response = client.post(ASSIGNMENTS, rows(variant, [f"SN-{i}" for i in lots[variant]]))
            answers[variant] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=force, args=(variant,)) for variant in lots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then both succeed, every unit has exactly one assignment, and the overlap went
    # wholly to whichever batch committed last
    assert {status for status, _ in answers.values()} == {200}, answers
    final = stored(etch)
    assert len(final) == Assignment.objects.filter(experiment=etch).count() == 300
    assert Unit.objects.count() == 300
    overlap = {final[f"SN-{i}"][0] for i in range(100, 200)}
    assert len(overlap) == 1
    last = overlap.pop()
    first = "a" if last == "b" else "b"
    # And the counts and the audit trail tell what happened, exactly
    assert answers[first][1] == {"created": 100, "updated": 100}
    assert answers[last][1] == {"created": 100, "updated": 100}
    overlap_events = AuditEvent.objects.filter(object_key="etch/SN-150").order_by("id")
    trail = [(e.from_value, e.to_value) for e in overlap_events]
    assert trail == ([("b", "a")] if last == "a" else [("b", "a"), ("a", "b")])
