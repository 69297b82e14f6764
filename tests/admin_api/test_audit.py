"""The audit trail: who changed what, when, newest first."""

import pytest

from lab.models import AuditEvent, Product
from lab.services.audit import audit_record
from tests.factories import ExperimentFactory, VariantFactory

AUDIT = "/products/widget/audit"


@pytest.fixture
def widget(product) -> Product:
    return Product.objects.get(key=product["key"], user__username="alice")


@pytest.fixture
def history(tenant, widget):
    """A status change, a forced lot of two units, then a re-bucketing, in that order."""
    experiment = ExperimentFactory(product=widget, key="etch")
    VariantFactory(experiment=experiment, key="a")
    VariantFactory(experiment=experiment, key="b")
    assert tenant.patch("/products/widget", {"status": "disabled"}).status_code == 200
    body = {"assignments": [{"unit": "SN-1", "variant": "a"}, {"unit": "SN-2", "variant": "a"}]}
    assert tenant.post("/products/widget/experiments/etch/assignments", body).status_code == 200
    audit_record(
        product=widget,
        actor="decide",
        action=AuditEvent.Action.REBUCKETED,
        object_type="assignment",
        object_key="etch/SN-3",
        from_value="c",
        to_value="b",
    )


def test_audit__lists_every_kind_of_event_newest_first(tenant, history):
    page = tenant.get(AUDIT).json()
    assert page["count"] == 4
    assert [
        (e["action"], e["object_key"], e["from_value"], e["to_value"]) for e in page["items"]
    ] == [
        ("rebucketed", "etch/SN-3", "c", "b"),
        ("forced", "etch/SN-2", "", "a"),
        ("forced", "etch/SN-1", "", "a"),
        ("status_changed", "widget", "enabled", "disabled"),
    ]
    forced = page["items"][1]
    assert (forced["actor"], forced["object_type"]) == ("alice", "assignment")
    assert forced["id"] and forced["created_at"]


def test_audit__filters(tenant, history):
    forced = tenant.get(AUDIT, action="forced").json()
    assert forced["count"] == 2
    products = tenant.get(AUDIT, object_type="product").json()
    assert [e["action"] for e in products["items"]] == ["status_changed"]
    one_unit = tenant.get(AUDIT, object_type="assignment", object_key="etch/SN-1").json()
    assert [e["to_value"] for e in one_unit["items"]] == ["a"]


def test_audit__paginated(tenant, history):
    page = tenant.get(AUDIT, limit=2, offset=1).json()
    assert page["count"] == 4
    assert [e["object_key"] for e in page["items"]] == ["etch/SN-2", "etch/SN-1"]


def test_audit__unknown_action_filter__422(tenant, widget):
    response = tenant.get(AUDIT, action="deleted")
    assert response.status_code == 422
    assert response.json()["detail"]


def test_audit__another_tenant__404(tenant, other_tenant, history):
    assert other_tenant.get(AUDIT).status_code == 404
    # And a product of the same key of its own shows only its own events
    other_tenant.post("/products", {"key": "widget"})
    assert other_tenant.get(AUDIT).json() == {"items": [], "count": 0}


def test_audit__malformed_filters__422(tenant, widget):
    for query in [{"object_key": "a\x00b"}, {"object_type": "Not A Type"}]:
        response = tenant.get(AUDIT, **query)
        assert response.status_code == 422, (query, response.content)
