"""Units: created in bulk (idempotently) or on the fly, read with their assignments and data."""

from urllib.parse import quote

import pytest

from lab.models import AssignmentSource, Product, Status, Unit
from tests.factories import (
    AssignmentFactory,
    ExperimentFactory,
    MeasurementFactory,
    MetricFactory,
    UnitFactory,
    VariantFactory,
)


@pytest.fixture
def widget(product) -> Product:
    return Product.objects.get(key=product["key"], user__username="alice")


def unit_path(key: str) -> str:
    return "/products/widget/units/" + quote(key, safe="")


def test_units__bulk_create__counts_new_and_existing(tenant, widget):
    # Given
    UnitFactory(product=widget, key="SN-1")
    # When
    response = tenant.post("/products/widget/units", {"units": ["SN-1", "SN-2", "SN-3", "SN-2"]})
    # Then the same key twice is one unit, and the existing one is left alone
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 2, "existing": 1, "updated": 0}
    assert sorted(Unit.objects.values_list("key", flat=True)) == ["SN-1", "SN-2", "SN-3"]


def test_units__bulk_create_twice__idempotent(tenant, widget):
    body = {"units": ["SN-1", "SN-2"]}
    assert tenant.post("/products/widget/units", body).json() == {
        "created": 2,
        "existing": 0,
        "updated": 0,
    }
    assert tenant.post("/products/widget/units", body).json() == {
        "created": 0,
        "existing": 2,
        "updated": 0,
    }
    assert Unit.objects.count() == 2


def test_units__any_unicode_key__round_trips_through_the_path(tenant, widget):
    keys = ["ユニット-1", "Müller-Ø", "lot 7 wafer 3", "user@example.com", "a" * 128]
    assert tenant.post("/products/widget/units", {"units": keys}).json()["created"] == 5
    for key in keys:
        response = tenant.get(unit_path(key))
        assert response.status_code == 200, (key, response.content)
        assert response.json()["key"] == key


def test_units__keys_are_case_sensitive(tenant, widget):
    response = tenant.post("/products/widget/units", {"units": ["sn-1", "SN-1"]})
    assert response.json() == {"created": 2, "existing": 0, "updated": 0}
    assert tenant.get(unit_path("Sn-1")).status_code == 404


def test_units__bad_key_in_body__422_naming_the_row_and_nothing_written(tenant, widget):
    for bad in [" SN-1", "SN-1 ", "a/b", "", "x" * 129, "tab\there", "nul\x00", 7]:
        response = tenant.post("/products/widget/units", {"units": ["SN-ok", bad]})
        assert response.status_code == 422, (bad, response.content)
        assert response.json()["detail"][0]["loc"][:3] == ["body", "units", 1]
    assert Unit.objects.count() == 0


def test_units__bad_key_in_path__422_with_detail(tenant, widget):
    for bad in ["SN-1 ", " SN-1", "x" * 129, "bell\x07"]:
        response = tenant.get(unit_path(bad))
        assert response.status_code == 422, (bad, response.content)
        assert response.json()["detail"][0]["loc"] == ["path", "unit"]


def test_units__more_than_10000__413_and_nothing_written(tenant, widget):
    response = tenant.post("/products/widget/units", {"units": [f"SN-{i}" for i in range(10_001)]})
    assert response.status_code == 413
    assert "10,000" in response.json()["detail"]
    assert Unit.objects.count() == 0


def test_units__exactly_10000__accepted(tenant, widget):
    response = tenant.post("/products/widget/units", {"units": [f"SN-{i}" for i in range(10_000)]})
    assert response.json() == {"created": 10_000, "existing": 0, "updated": 0}


def test_units__body_over_the_upload_limit__413(tenant, widget, settings):
    # Given a server that takes bodies up to 1 KiB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    # When a body of 2 KiB arrives
    response = tenant.post("/products/widget/units", {"units": ["x" * 100] * 20})
    # Then
    assert response.status_code == 413
    assert response.json()["detail"]
    assert Unit.objects.count() == 0


def test_units__list__paginated_in_creation_order(tenant, widget):
    tenant.post("/products/widget/units", {"units": ["c", "a", "b"]})
    page = tenant.get("/products/widget/units", limit=2, offset=1).json()
    assert page["count"] == 3
    assert [unit["key"] for unit in page["items"]] == ["b", "c"]


def test_units__get_unknown__404(tenant, widget):
    response = tenant.get(unit_path("SN-404"))
    assert response.status_code == 404
    assert "SN-404" in response.json()["detail"]


def test_units__get__shows_assignments_and_measurements_with_in_spec(tenant, widget):
    # Given a unit with an assignment and measurements against several kinds of limits
    unit = UnitFactory(product=widget, key="SN-1")
    experiment = ExperimentFactory(product=widget, key="etch")
    VariantFactory(experiment=experiment, key="a")
    long = VariantFactory(experiment=experiment, key="long")
    AssignmentFactory(
        experiment=experiment, unit=unit, variant=long, source=AssignmentSource.FORCED
    )
    in_limits = MetricFactory(product=widget, key="thickness", lower_limit=0.9, upper_limit=1.1)
    upper_only = MetricFactory(product=widget, key="warp", upper_limit=5.0)
    no_limits = MetricFactory(product=widget, key="weight")
    MeasurementFactory(metric=in_limits, unit=unit, value=1.1)  # on the closed limit
    MeasurementFactory(metric=upper_only, unit=unit, value=5.5)
    MeasurementFactory(metric=no_limits, unit=unit, value=12.0)
    # When
    response = tenant.get(unit_path("SN-1"))
    # Then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["key"] == "SN-1"
    [assignment] = body["assignments"]
    assert (assignment["experiment"], assignment["variant"], assignment["source"]) == (
        "etch",
        "long",
        "forced",
    )
    assert {"created_at", "updated_at"} <= assignment.keys()
    in_spec = {m["metric"]: (m["value"], m["in_spec"]) for m in body["measurements"]}
    assert in_spec == {
        "thickness": (1.1, True),
        "warp": (5.5, False),
        "weight": (12.0, None),
    }
    assert all(m["measured_at"] for m in body["measurements"])


def test_units__get__leaves_out_removed_experiments_and_metrics(tenant, widget):
    unit = UnitFactory(product=widget, key="SN-1")
    AssignmentFactory(
        experiment=ExperimentFactory(product=widget, status=Status.REMOVED), unit=unit
    )
    MeasurementFactory(metric=MetricFactory(product=widget, status=Status.REMOVED), unit=unit)
    body = tenant.get(unit_path("SN-1")).json()
    assert body["assignments"] == []
    assert body["measurements"] == []


def test_units__get__fixed_number_of_queries(tenant, widget, django_assert_max_num_queries):
    unit = UnitFactory(product=widget, key="SN-1")
    for _ in range(5):
        AssignmentFactory(experiment=ExperimentFactory(product=widget), unit=unit)
        MeasurementFactory(metric=MetricFactory(product=widget), unit=unit)
    # token, product, then the unit, its assignments and its measurements
    with django_assert_max_num_queries(5):
        body = tenant.get(unit_path("SN-1")).json()
    assert len(body["assignments"]) == len(body["measurements"]) == 5


def test_units__another_tenants_product__404(tenant, other_tenant, widget):
    UnitFactory(product=widget, key="SN-1")
    assert other_tenant.get("/products/widget/units").status_code == 404
    assert other_tenant.post("/products/widget/units", {"units": ["SN-2"]}).status_code == 404
    assert other_tenant.get(unit_path("SN-1")).status_code == 404
    assert Unit.objects.count() == 1


@pytest.mark.parametrize(
    "stored",
    ["9007199254740993", "-18446744073709551616", "123456789012345678901234567890"],
)
def test_units__stored_number_beyond_64_bits__read_back_exactly_not_500(tenant, widget, stored):
    """Numbers Lab now refuses (beyond ±(2**53 - 1)) may already be stored, written before it
    checked them; PostgreSQL's jsonb keeps them exactly, and reading the unit shows them."""
    from django.db import connection

    # Given a unit whose stored attribute was written as raw JSON, outside the API
    unit = UnitFactory(product=widget, key="SN-1")
    with connection.cursor() as cursor:
        cast = "::jsonb" if connection.vendor == "postgresql" else ""
        cursor.execute(
            f"UPDATE lab_unit SET attributes = %s{cast} WHERE id = %s",
            [f'{{"n": {stored}, "line": "L1"}}', unit.id],
        )
    expected = int(Unit.objects.get(id=unit.id).attributes["n"])
    # When it is read
    one = tenant.get(unit_path("SN-1"))
    # Then the number is written exactly as stored, in valid JSON
    assert one.status_code == 200, one.content
    assert one.json()["attributes"] == {"n": expected, "line": "L1"}
