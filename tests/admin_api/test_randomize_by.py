"""randomize_by on experiments through the admin API: set, shown, validated, audited, bumped,
and fixed once the experiment has an assignment (docs/admin.md)."""

import pytest

from lab.models import AuditEvent, Product

EXPERIMENTS = "/products/widget/experiments"


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


def create(tenant, **fields):
    body = {"key": "etch-time", "variants": [{"key": "a"}, {"key": "b"}], **fields}
    return tenant.post(EXPERIMENTS, body)


def test_experiments__randomize_by__created_shown_changed_and_audited(tenant, product):
    # Given an experiment created randomized by lot
    response = create(tenant, randomize_by="lot")
    assert response.status_code == 201, response.content
    assert response.json()["randomize_by"] == "lot"
    assert tenant.get(f"{EXPERIMENTS}/etch-time").json()["randomize_by"] == "lot"
    # When it is changed (no assignment yet), then cleared
    before = config_version()
    response = tenant.patch(f"{EXPERIMENTS}/etch-time", {"randomize_by": "wafer"})
    assert response.status_code == 200, response.content
    assert response.json()["randomize_by"] == "wafer"
    assert config_version() != before
    assert (
        tenant.patch(f"{EXPERIMENTS}/etch-time", {"randomize_by": None}).json()["randomize_by"]
        is None
    )
    # Then each change is in the audit trail
    events = AuditEvent.objects.filter(action="randomize_by_changed").order_by("id")
    assert [(e.from_value, e.to_value) for e in events] == [
        ("", "lot"),
        ("lot", "wafer"),
        ("wafer", ""),
    ]


def test_experiments__default__randomizes_units(tenant, product):
    assert create(tenant).json()["randomize_by"] is None


@pytest.mark.parametrize("name", ["", "1lot", "lot id", "a" * 65, "lot/2", 3])
def test_experiments__randomize_by_not_an_attribute_name__422(tenant, product, name):
    response = create(tenant, randomize_by=name)
    assert response.status_code == 422, response.content
    response = create(tenant)
    assert tenant.patch(f"{EXPERIMENTS}/etch-time", {"randomize_by": name}).status_code == 422


def test_experiments__randomize_by_changed_after_an_assignment__409_and_unchanged(tenant, product):
    # Given an experiment randomized by lot with one forced assignment
    create(tenant, randomize_by="lot")
    response = tenant.put(f"{EXPERIMENTS}/etch-time/assignments/SN-1", {"variant": "b"})
    assert response.status_code == 201, response.content
    # When randomize_by is changed or cleared
    for value in ("wafer", None):
        response = tenant.patch(f"{EXPERIMENTS}/etch-time", {"randomize_by": value})
        # Then 409, naming why, and nothing changed
        assert response.status_code == 409, response.content
        assert "assignments" in response.json()["detail"]
    assert tenant.get(f"{EXPERIMENTS}/etch-time").json()["randomize_by"] == "lot"
    # The same value again is not a change
    assert tenant.patch(f"{EXPERIMENTS}/etch-time", {"randomize_by": "lot"}).status_code == 200
