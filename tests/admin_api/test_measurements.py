"""Measurements: one value per (metric, unit), loaded in batches, replaced when sent again."""

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from lab.models import Measurement, Product, Status, Unit
from tests.conftest import ApiClient, requires_postgres
from tests.factories import MeasurementFactory, MetricFactory, UnitFactory

MEASUREMENTS = "/products/widget/measurements"


@pytest.fixture
def widget(product) -> Product:
    return Product.objects.get(key=product["key"], user__username="alice")


@pytest.fixture
def thickness(widget):
    return MetricFactory(product=widget, key="thickness", lower_limit=0.9, upper_limit=1.1)


def rows(metric: str, values: dict[str, float]) -> dict:
    return {
        "measurements": [
            {"metric": metric, "unit": unit, "value": value} for unit, value in values.items()
        ]
    }


def stored() -> dict[tuple[str, str], float]:
    return {
        (m.metric.key, m.unit.key): m.value
        for m in Measurement.objects.select_related("metric", "unit")
    }


def test_measurements__record__creates_units_and_replaces_existing_values(tenant, thickness):
    # Given SN-1 measured already
    MeasurementFactory(
        metric=thickness, unit=UnitFactory(product=thickness.product, key="SN-1"), value=0.5
    )
    # When
    response = tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.02, "SN-2": 0.98}))
    # Then
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 1, "updated": 1}
    assert stored() == {("thickness", "SN-1"): 1.02, ("thickness", "SN-2"): 0.98}
    assert Unit.objects.count() == 2


def test_measurements__measured_at__given_or_stamped_now(tenant, thickness):
    # When one row says when it was measured and the other does not
    before = datetime.now(UTC)
    body = rows("thickness", {"SN-1": 1.0, "SN-2": 1.0})
    body["measurements"][0]["measured_at"] = "2024-03-01T10:00:00+01:00"
    tenant.post(MEASUREMENTS, body)
    # Then
    measured_at = {m.unit.key: m.measured_at for m in Measurement.objects.select_related("unit")}
    assert measured_at["SN-1"] == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    assert measured_at["SN-2"] >= before


def test_measurements__integer_values__accepted_as_numbers(tenant, thickness):
    assert tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1})).status_code == 200
    assert stored() == {("thickness", "SN-1"): 1.0}


def test_measurements__several_metrics_in_one_batch__counted_exactly(tenant, thickness):
    MetricFactory(product=thickness.product, key="warp")
    tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.0}))
    body = rows("thickness", {"SN-1": 1.0, "SN-2": 1.0})
    body["measurements"] += rows("warp", {"SN-1": 3.0, "SN-2": 4.0})["measurements"]
    assert tenant.post(MEASUREMENTS, body).json() == {"created": 3, "updated": 1}


def test_measurements__disabled_metric__still_takes_values(tenant, thickness):
    thickness.status = Status.DISABLED
    thickness.save()
    assert tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.0})).status_code == 200


@pytest.mark.parametrize(
    ("bad_row", "field", "kind"),
    [
        ({"metric": "nope", "unit": "SN-9", "value": 1.0}, "metric", "unknown_metric"),
        ({"metric": "gone", "unit": "SN-9", "value": 1.0}, "metric", "removed_metric"),
        ({"metric": "thickness", "unit": "SN-1", "value": 2.0}, "unit", "duplicate_measurement"),
    ],
)
def test_measurements__one_bad_row__400_naming_it_and_nothing_written(
    tenant, thickness, bad_row, field, kind
):
    # Given a batch whose row 2 is bad
    MetricFactory(product=thickness.product, key="gone", status=Status.REMOVED)
    body = rows("thickness", {"SN-1": 1.0, "SN-2": 1.0})
    body["measurements"].append(bad_row)
    # When
    response = tenant.post(MEASUREMENTS, body)
    # Then
    assert response.status_code == 400, response.content
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "measurements", 2, field]
    assert problem["type"] == kind
    assert problem["msg"].startswith("measurements[2]: ")
    assert Measurement.objects.count() == Unit.objects.count() == 0


def test_measurements__bad_values_and_keys__4xx_and_nothing_written(tenant, thickness):
    good = {"metric": "thickness", "unit": "SN-0", "value": 1.0}
    for bad_row in [
        {"metric": "thickness", "unit": "SN-1", "value": "1.0"},
        {"metric": "thickness", "unit": "SN-1", "value": None},
        {"metric": "thickness", "unit": "SN-1", "value": True},
        {"metric": "thickness", "unit": "SN-1/2", "value": 1.0},
        {"metric": "Thickness", "unit": "SN-1", "value": 1.0},
        {"metric": "thickness", "unit": "SN-1", "value": 1.0, "measured_at": "yesterday"},
        {"metric": "thickness", "unit": "SN-1", "value": 1.0, "measured_at": "2024-03-01T10:00"},
        {"metric": "thickness", "unit": "SN-1"},
    ]:
        response = tenant.post(MEASUREMENTS, {"measurements": [good, bad_row]})
        assert response.status_code == 422, (bad_row, response.content)
        assert 1 in response.json()["detail"][0]["loc"]
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        raw = b'{"measurements": [{"metric": "thickness", "unit": "SN-1", "value": %s}]}' % literal
        response = tenant.post(MEASUREMENTS, raw=raw)
        assert response.status_code == 400, (literal, response.content)
    assert Measurement.objects.count() == Unit.objects.count() == 0


def test_measurements__more_than_10000__413_and_nothing_written(tenant, thickness):
    response = tenant.post(MEASUREMENTS, rows("thickness", {f"SN-{i}": 1.0 for i in range(10_001)}))
    assert response.status_code == 413
    assert "10,000" in response.json()["detail"]
    assert Measurement.objects.count() == 0


def test_measurements__list__filters_and_in_spec(tenant, thickness):
    MetricFactory(product=thickness.product, key="weight")
    tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.0, "SN-2": 1.5}))
    tenant.post(MEASUREMENTS, rows("weight", {"SN-1": 12.0}))
    # When
    by_metric = tenant.get(MEASUREMENTS, metric="thickness").json()
    by_unit = tenant.get(MEASUREMENTS, unit="SN-1").json()
    # Then
    assert by_metric["count"] == 2
    assert [(m["unit"], m["value"], m["in_spec"]) for m in by_metric["items"]] == [
        ("SN-1", 1.0, True),
        ("SN-2", 1.5, False),
    ]
    assert [(m["metric"], m["in_spec"]) for m in by_unit["items"]] == [
        ("thickness", True),
        ("weight", None),
    ]
    assert all(m["measured_at"] for m in by_unit["items"])
    page = tenant.get(MEASUREMENTS, limit=1, offset=2).json()
    assert (page["count"], page["items"][0]["metric"]) == (3, "weight")
    assert tenant.get(MEASUREMENTS, metric="thickness", unit="SN-2").json()["count"] == 1


def test_measurements__list__removed_metric_only_when_asked_for(tenant, thickness):
    tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.0}))
    thickness.status = Status.REMOVED
    thickness.save()
    assert tenant.get(MEASUREMENTS).json()["count"] == 0
    assert tenant.get(MEASUREMENTS, metric="thickness").json()["count"] == 1


def test_measurements__another_tenant__404_on_every_route(tenant, other_tenant, thickness):
    tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 1.0}))
    assert other_tenant.get(MEASUREMENTS).status_code == 404
    response = other_tenant.post(MEASUREMENTS, rows("thickness", {"SN-1": 2.0}))
    assert response.status_code == 404
    assert stored() == {("thickness", "SN-1"): 1.0}


def test_measurements__write_queries_do_not_grow_with_the_batch(tenant, thickness):
    # Sizes that fit one statement on every database (SQLite binds at most 999 parameters)
    def queries_for(count: int, offset: int) -> int:
        body = rows("thickness", {f"SN-{offset + i}": 1.0 for i in range(count)})
        with CaptureQueriesContext(connection) as context:
            assert tenant.post(MEASUREMENTS, body).status_code == 200
        return len(context)

    assert queries_for(2, 0) == queries_for(200, 1000)


def test_measurements__bulk_10000__fixed_number_of_queries(
    tenant, thickness, django_assert_max_num_queries
):
    requires_postgres()  # SQLite splits bulk statements into batches of 999 parameters
    batch = rows("thickness", {f"SN-{i}": 1.0 for i in range(10_000)})
    # token, product; then in a savepoint: metrics, units insert, units lock, count, upsert
    with django_assert_max_num_queries(9):
        assert tenant.post(MEASUREMENTS, batch).json() == {"created": 10_000, "updated": 0}
    with django_assert_max_num_queries(9):
        assert tenant.post(MEASUREMENTS, batch).json() == {"created": 0, "updated": 10_000}


@pytest.mark.django_db(transaction=True)
def test_measurements__concurrent_overlapping_batches__consistent(tenant, thickness):
    requires_postgres()
    # Given two instruments loading overlapping batches at the same instant, over units
    # that exist already (SN-150..299) and units that do not
    for i in range(150, 300):
        UnitFactory(product=thickness.product, key=f"SN-{i}")
    batches = {
        1.0: {f"SN-{i}": 1.0 for i in range(0, 300)},
        2.0: {f"SN-{i}": 2.0 for i in range(150, 450)},
    }
    start = threading.Barrier(len(batches))
    answers: dict[float, tuple[int, dict]] = {}

    def load(value: float) -> None:
        try:
            client = ApiClient(token=tenant.token, client=Client())
            start.wait()
            response = client.post(MEASUREMENTS, rows("thickness", batches[value]))
            answers[value] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=load, args=(value,)) for value in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then both succeed, one value per (metric, unit), the overlap wholly from one batch
    assert {status for status, _ in answers.values()} == {200}, answers
    final = stored()
    assert len(final) == Measurement.objects.count() == Unit.objects.count() == 450
    overlap = {final[("thickness", f"SN-{i}")] for i in range(150, 300)}
    assert len(overlap) == 1
    # And the counts add up: 450 created in all, the 150 shared rows updated once
    created = sum(answer["created"] for _, answer in answers.values())
    updated = sum(answer["updated"] for _, answer in answers.values())
    assert (created, updated) == (450, 150)


def test_measurements__list_bad_filter__422(tenant, thickness):
    for query in [{"unit": "a\x00b"}, {"unit": " SN-1"}, {"metric": "Not A Key"}]:
        response = tenant.get(MEASUREMENTS, **query)
        assert response.status_code == 422, (query, response.content)
        assert response.json()["detail"]


def test_measurements__measured_at_outside_utc_years__422_and_nothing_stored(tenant, thickness):
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        body = rows("thickness", {"SN-1": 1.0})
        body["measurements"][0]["measured_at"] = moment
        response = tenant.post(MEASUREMENTS, body)
        assert response.status_code == 422, response.content
        assert "out of range" in str(response.json()["detail"])
    assert stored() == {}
    assert tenant.get("/products/widget/measurements").status_code == 200
