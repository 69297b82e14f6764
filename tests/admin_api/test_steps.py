"""Steps: the ordered stages of a product's process."""

import pytest

from lab.models import AuditEvent, Product, Step

STEPS = "/products/widget/steps"


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


def test_steps__create_then_get__round_trips(tenant, product):
    # When
    created = tenant.post(STEPS, {"key": "etch", "name": "Etch", "position": 3})
    # Then
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["key"], body["name"], body["position"], body["status"]) == (
        "etch",
        "Etch",
        3,
        "enabled",
    )
    assert tenant.get(f"{STEPS}/etch").json() == body


def test_steps__no_position__goes_after_the_last_step(tenant, product):
    tenant.post(STEPS, {"key": "clean", "position": 10})
    assert tenant.post(STEPS, {"key": "etch"}).json()["position"] == 11


def test_steps__first_step_without_position__is_position_0_and_named_by_its_key(tenant, product):
    body = tenant.post(STEPS, {"key": "clean"}).json()
    assert (body["position"], body["name"]) == (0, "clean")


def test_steps__list__in_process_order_and_paginated(tenant, product):
    # Given steps created out of order
    for key, position in [("anneal", 3), ("clean", 1), ("etch", 2), ("test", 4)]:
        tenant.post(STEPS, {"key": key, "position": position})
    # When
    page = tenant.get(STEPS, limit=2, offset=1).json()
    # Then
    assert page["count"] == 4
    assert [s["key"] for s in page["items"]] == ["etch", "anneal"]


def test_steps__duplicate_key__409(tenant, product):
    tenant.post(STEPS, {"key": "etch"})
    response = tenant.post(STEPS, {"key": "etch"})
    assert response.status_code == 409
    assert "etch" in response.json()["detail"]
    assert Step.objects.count() == 1


def test_steps__same_key_in_another_product__allowed(tenant, product):
    tenant.post("/products", {"key": "gadget"})
    assert tenant.post(STEPS, {"key": "etch"}).status_code == 201
    assert tenant.post("/products/gadget/steps", {"key": "etch"}).status_code == 201


def test_steps__patch__changes_name_and_position(tenant, product):
    tenant.post(STEPS, {"key": "etch"})
    response = tenant.patch(f"{STEPS}/etch", {"name": "Plasma etch", "position": 7})
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["position"]) == ("Plasma etch", 7)
    assert Step.objects.get().position == 7


def test_steps__patch_key__422_key_is_not_changeable(tenant, product):
    tenant.post(STEPS, {"key": "etch"})
    assert tenant.patch(f"{STEPS}/etch", {"key": "other"}).status_code == 422
    assert Step.objects.get().key == "etch"


def test_steps__delete__removes_hides_and_audits(tenant, product):
    # Given
    tenant.post(STEPS, {"key": "etch"})
    before = config_version()
    # When
    response = tenant.delete(f"{STEPS}/etch")
    # Then
    assert response.status_code == 200
    assert response.json()["status"] == "removed"
    assert tenant.get(STEPS).json()["count"] == 0
    assert tenant.get(STEPS, status="removed").json()["count"] == 1
    assert tenant.get(f"{STEPS}/etch").json()["status"] == "removed"
    event = AuditEvent.objects.get()
    assert (event.actor, event.object_type, event.object_key) == ("alice", "step", "etch")
    assert (event.from_value, event.to_value) == ("enabled", "removed")
    # A step's status is bookkeeping: experiments keep their step, so decide is unchanged
    assert config_version() == before
    # And the key stays taken until it is restored with PATCH
    assert tenant.post(STEPS, {"key": "etch"}).status_code == 409
    assert tenant.patch(f"{STEPS}/etch", {"status": "enabled"}).json()["status"] == "enabled"


def test_steps__status_change__audited_and_leaves_decide_alone(tenant, product):
    tenant.post(STEPS, {"key": "etch"})
    before = config_version()
    tenant.patch(f"{STEPS}/etch", {"status": "disabled"})
    assert config_version() == before
    assert AuditEvent.objects.get().to_value == "disabled"


def test_steps__rename__no_audit_event(tenant, product):
    tenant.post(STEPS, {"key": "etch"})
    tenant.patch(f"{STEPS}/etch", {"name": "Etch"})
    assert not AuditEvent.objects.exists()


def test_steps__unknown_step__404(tenant, product):
    assert tenant.get(f"{STEPS}/nope").status_code == 404
    assert tenant.patch(f"{STEPS}/nope", {"name": "x"}).status_code == 404
    assert tenant.delete(f"{STEPS}/nope").status_code == 404
    assert tenant.get(f"{STEPS}/bad%00key").status_code == 404
    assert tenant.get("/products/nope/steps").status_code == 404


def test_steps__another_tenants_product__404_on_every_route(tenant, other_tenant, product):
    # Given alice's product has a step
    tenant.post(STEPS, {"key": "etch"})
    # Then mallory can neither see nor touch it
    assert other_tenant.get(STEPS).status_code == 404
    assert other_tenant.post(STEPS, {"key": "clean"}).status_code == 404
    assert other_tenant.get(f"{STEPS}/etch").status_code == 404
    assert other_tenant.patch(f"{STEPS}/etch", {"name": "x"}).status_code == 404
    assert other_tenant.delete(f"{STEPS}/etch").status_code == 404
    assert list(Step.objects.values_list("key", "name", "status")) == [("etch", "etch", "enabled")]


@pytest.mark.parametrize(
    "body",
    [
        {"key": "Has-Caps"},
        {"key": "-leading"},
        {"key": "x" * 65},
        {"key": "nul\x00"},
        {"key": 12},
        {"key": "ok", "name": "nul\x00byte"},
        {"key": "ok", "name": "x" * 201},
        {"key": "ok", "position": -1},
        {"key": "ok", "position": 2**31},
        {"key": "ok", "position": "3"},
        {"key": "ok", "position": 1.5},
        {"key": "ok", "position": True},
        {"key": "ok", "status": "enabled"},
        {"key": "ok", "unknown": 1},
        {},
    ],
)
def test_steps__bad_input__422_and_nothing_written(tenant, product, body):
    response = tenant.post(STEPS, body)
    assert response.status_code == 422, (body, response.content)
    assert response.json()["detail"]
    assert not Step.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"status": "gone"},
        {"name": None},
        {"position": None},
        {"position": -5},
        {"name": "nul\x00"},
        {"key": "other"},
    ],
)
def test_steps__bad_patch__422_and_unchanged(tenant, product, body):
    tenant.post(STEPS, {"key": "etch", "position": 1})
    response = tenant.patch(f"{STEPS}/etch", body)
    assert response.status_code == 422, (body, response.content)
    assert list(Step.objects.values_list("key", "name", "position", "status")) == [
        ("etch", "etch", 1, "enabled")
    ]


def test_steps__malformed_json__400(tenant, product):
    assert tenant.post(STEPS, raw=b"{not json").status_code == 400
    assert tenant.post(STEPS, raw=b'{"key": "etch", "position": NaN}').status_code == 400
    assert not Step.objects.exists()
