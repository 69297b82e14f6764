"""Metrics: what is measured on units, against optional spec limits."""

import pytest

from lab.models import AuditEvent, Metric

METRICS = "/products/widget/metrics"
THICKNESS = {
    "key": "thickness",
    "name": "Oxide thickness",
    "lower_limit": 0.9,
    "nominal": 1.0,
    "upper_limit": 1.1,
    "unit_of_measure": "mm",
}


def limits() -> tuple:
    return Metric.objects.values_list("lower_limit", "nominal", "upper_limit").get()


@pytest.fixture
def etch(tenant, product):
    assert tenant.post("/products/widget/steps", {"key": "etch"}).status_code == 201


def test_metrics__create_then_get__round_trips(tenant, product, etch):
    # When
    created = tenant.post(METRICS, {**THICKNESS, "step": "etch"})
    # Then
    assert created.status_code == 201, created.content
    body = created.json()
    assert {k: body[k] for k in THICKNESS} == THICKNESS
    assert (body["step"], body["status"]) == ("etch", "enabled")
    assert tenant.get(f"{METRICS}/thickness").json() == body


def test_metrics__limits_and_step_optional(tenant, product):
    body = tenant.post(METRICS, {"key": "yield-loss"}).json()
    assert (body["lower_limit"], body["nominal"], body["upper_limit"], body["step"]) == (
        None,
        None,
        None,
        None,
    )
    one_sided = tenant.post(METRICS, {"key": "leakage", "upper_limit": 5})
    assert one_sided.status_code == 201
    assert one_sided.json()["upper_limit"] == 5.0


def test_metrics__equal_limits__allowed(tenant, product):
    response = tenant.post(METRICS, {"key": "m", "lower_limit": 1, "nominal": 1, "upper_limit": 1})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"lower_limit": 2, "upper_limit": 1}, "lower_limit (2.0) must not exceed upper_limit"),
        ({"lower_limit": 2, "nominal": 1}, "lower_limit (2.0) must not exceed nominal"),
        ({"nominal": 2, "upper_limit": 1}, "nominal (2.0) must not exceed upper_limit"),
        ({"lower_limit": 0, "nominal": 5, "upper_limit": 1}, "nominal (5.0) must not exceed"),
    ],
)
def test_metrics__limits_out_of_order__400_and_nothing_written(tenant, product, given, named):
    response = tenant.post(METRICS, {"key": "m", **given})
    assert response.status_code == 400
    assert named in response.json()["detail"]
    assert not Metric.objects.exists()


def test_metrics__patch_limit_past_an_unmentioned_one__400_and_unchanged(tenant, product):
    # Given lower 0.9 <= nominal 1.0 <= upper 1.1
    tenant.post(METRICS, THICKNESS)
    # When a PATCH moves only the lower limit above the stored upper limit
    response = tenant.patch(f"{METRICS}/thickness", {"lower_limit": 2.0})
    # Then the merged limits are checked: a clear 400, not a database error
    assert response.status_code == 400
    assert "lower_limit (2.0) must not exceed upper_limit (1.1)" in response.json()["detail"]
    assert limits() == (0.9, 1.0, 1.1)


def test_metrics__patch_nominal_out_of_order__400_and_unchanged(tenant, product):
    tenant.post(METRICS, THICKNESS)
    response = tenant.patch(f"{METRICS}/thickness", {"nominal": 0.5})
    assert response.status_code == 400
    assert "nominal" in response.json()["detail"]
    assert limits() == (0.9, 1.0, 1.1)


def test_metrics__patch_null_clears_a_limit(tenant, product):
    # Given
    tenant.post(METRICS, THICKNESS)
    # When the upper limit is cleared, the lower one may move past the old upper one
    response = tenant.patch(f"{METRICS}/thickness", {"upper_limit": None, "lower_limit": 1.0})
    # Then
    assert response.status_code == 200, response.content
    assert limits() == (1.0, 1.0, None)


def test_metrics__patch_all_limits_together__checked_as_a_whole(tenant, product):
    tenant.post(METRICS, THICKNESS)
    response = tenant.patch(
        f"{METRICS}/thickness", {"lower_limit": 5, "nominal": 6, "upper_limit": 7}
    )
    assert response.status_code == 200
    assert limits() == (5.0, 6.0, 7.0)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key":"m","lower_limit":NaN}',
        b'{"key":"m","nominal":Infinity}',
        b'{"key":"m","upper_limit":-Infinity}',
        b'{"key":"m","upper_limit":1e999}',
    ],
)
def test_metrics__non_finite_limit__400_and_nothing_written(tenant, product, raw):
    response = tenant.post(METRICS, raw=raw)
    assert response.status_code == 400
    assert response.json()["detail"]
    assert not Metric.objects.exists()


def test_metrics__non_finite_limit_in_patch__400_and_unchanged(tenant, product):
    tenant.post(METRICS, THICKNESS)
    for raw in (b'{"upper_limit":NaN}', b'{"upper_limit":1e999}'):
        assert tenant.patch(f"{METRICS}/thickness", raw=raw).status_code == 400
    assert limits() == (0.9, 1.0, 1.1)


def test_metrics__unknown_step__400_with_detail(tenant, product):
    response = tenant.post(METRICS, {"key": "m", "step": "nope"})
    assert response.status_code == 400
    assert "no step 'nope'" in response.json()["detail"]
    assert not Metric.objects.exists()


def test_metrics__removed_step__400(tenant, product, etch):
    # Given the etch step is removed
    tenant.delete("/products/widget/steps/etch")
    # Then a metric can no longer be placed there
    response = tenant.post(METRICS, {"key": "m", "step": "etch"})
    assert response.status_code == 400
    assert "removed" in response.json()["detail"]
    tenant.post(METRICS, {"key": "m"})
    assert tenant.patch(f"{METRICS}/m", {"step": "etch"}).status_code == 400


def test_metrics__step_of_another_product__400(tenant, product):
    tenant.post("/products", {"key": "gadget"})
    tenant.post("/products/gadget/steps", {"key": "etch"})
    assert tenant.post(METRICS, {"key": "m", "step": "etch"}).status_code == 400


def test_metrics__patch_step__set_and_cleared(tenant, product, etch):
    tenant.post(METRICS, {"key": "m"})
    assert tenant.patch(f"{METRICS}/m", {"step": "etch"}).json()["step"] == "etch"
    assert tenant.patch(f"{METRICS}/m", {"step": None}).json()["step"] is None
    assert Metric.objects.get().step is None


def test_metrics__already_on_a_removed_step__other_fields_still_patchable(tenant, product, etch):
    tenant.post(METRICS, {"key": "m", "step": "etch"})
    tenant.delete("/products/widget/steps/etch")
    response = tenant.patch(f"{METRICS}/m", {"name": "Renamed", "step": "etch"})
    assert response.status_code == 200
    assert response.json()["step"] == "etch"


def test_metrics__duplicate_key__409(tenant, product):
    tenant.post(METRICS, THICKNESS)
    response = tenant.post(METRICS, {"key": "thickness"})
    assert response.status_code == 409
    assert "thickness" in response.json()["detail"]


def test_metrics__list__hides_removed_and_paginates(tenant, product):
    for i in range(4):
        tenant.post(METRICS, {"key": f"m{i}"})
    tenant.delete(f"{METRICS}/m0")
    page = tenant.get(METRICS, limit=2).json()
    assert page["count"] == 3
    assert [m["key"] for m in page["items"]] == ["m1", "m2"]
    assert [m["key"] for m in tenant.get(METRICS, status="removed").json()["items"]] == ["m0"]


def test_metrics__delete__removed_and_audited(tenant, product):
    tenant.post(METRICS, THICKNESS)
    response = tenant.delete(f"{METRICS}/thickness")
    assert response.status_code == 200
    assert response.json()["status"] == "removed"
    event = AuditEvent.objects.get()
    assert (event.object_type, event.object_key, event.from_value, event.to_value) == (
        "metric",
        "thickness",
        "enabled",
        "removed",
    )


def test_metrics__another_tenants_product__404_on_every_route(tenant, other_tenant, product):
    tenant.post(METRICS, THICKNESS)
    assert other_tenant.get(METRICS).status_code == 404
    assert other_tenant.post(METRICS, {"key": "m"}).status_code == 404
    assert other_tenant.get(f"{METRICS}/thickness").status_code == 404
    assert other_tenant.patch(f"{METRICS}/thickness", {"lower_limit": 0}).status_code == 404
    assert other_tenant.delete(f"{METRICS}/thickness").status_code == 404
    assert Metric.objects.get().status == "enabled"
    assert limits() == (0.9, 1.0, 1.1)


def test_metrics__unknown_metric__404(tenant, product):
    assert tenant.get(f"{METRICS}/nope").status_code == 404
    assert tenant.patch(f"{METRICS}/nope", {"name": "x"}).status_code == 404
    assert tenant.get(f"{METRICS}/a%00b").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"key": "Bad Key"},
        {"key": "m\x00"},
        {"key": "m", "name": "nul\x00"},
        {"key": "m", "unit_of_measure": "x" * 33},
        {"key": "m", "unit_of_measure": "m\x00m"},
        {"key": "m", "lower_limit": "1.0"},
        {"key": "m", "lower_limit": True},
        {"key": "m", "lower_limit": [1]},
        {"key": "m", "step": "Bad Step"},
        {"key": "m", "step": 3},
        {"key": "m", "status": "enabled"},
        {"key": "m", "unknown": 1},
    ],
)
def test_metrics__bad_input__422_and_nothing_written(tenant, product, body):
    response = tenant.post(METRICS, body)
    assert response.status_code == 422, (body, response.content)
    assert response.json()["detail"]
    assert not Metric.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"key": "other"},
        {"name": None},
        {"status": None},
        {"status": "gone"},
        {"unit_of_measure": None},
        {"nominal": "1"},
    ],
)
def test_metrics__bad_patch__422_and_unchanged(tenant, product, body):
    tenant.post(METRICS, THICKNESS)
    response = tenant.patch(f"{METRICS}/thickness", body)
    assert response.status_code == 422, (body, response.content)
    metric = Metric.objects.get()
    assert (metric.key, metric.name, metric.status) == ("thickness", "Oxide thickness", "enabled")
    assert limits() == (0.9, 1.0, 1.1)
