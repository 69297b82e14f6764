"""Variants: the arms of an experiment; their status and weight drive decide."""

import pytest

from lab.models import AuditEvent, Product, Variant

EXPERIMENT = "/products/widget/experiments/etch-time"
VARIANTS = f"{EXPERIMENT}/variants"


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


@pytest.fixture
def experiment(tenant, product):
    response = tenant.post("/products/widget/experiments", {"key": "etch-time"})
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def two_variants(tenant, experiment):
    for body in ({"key": "short", "is_control": True}, {"key": "long", "weight": 2}):
        assert tenant.post(VARIANTS, body).status_code == 201


def test_variants__create_then_get__round_trips(tenant, experiment):
    # When
    created = tenant.post(VARIANTS, {"key": "long", "name": "Long etch", "weight": 2.5})
    # Then
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["key"], body["name"], body["status"], body["weight"], body["is_control"]) == (
        "long",
        "Long etch",
        "enabled",
        2.5,
        False,
    )
    assert tenant.get(f"{VARIANTS}/long").json() == body


def test_variants__defaults__enabled_weight_1_not_control(tenant, experiment):
    body = tenant.post(VARIANTS, {"key": "a"}).json()
    assert (body["name"], body["status"], body["weight"], body["is_control"]) == (
        "a",
        "enabled",
        1.0,
        False,
    )


def test_variants__zero_weight__allowed(tenant, experiment):
    assert tenant.post(VARIANTS, {"key": "a", "weight": 0}).json()["weight"] == 0.0


def test_variants__list__creation_order_hides_removed_paginated(tenant, experiment):
    for key in ("c", "a", "b", "d"):
        tenant.post(VARIANTS, {"key": key})
    tenant.delete(f"{VARIANTS}/a")
    page = tenant.get(VARIANTS, limit=2).json()
    assert page["count"] == 3
    assert [v["key"] for v in page["items"]] == ["c", "b"]
    assert [v["key"] for v in tenant.get(VARIANTS, status="removed").json()["items"]] == ["a"]


def test_variants__shown_on_the_experiment(tenant, two_variants):
    body = tenant.get(EXPERIMENT).json()
    assert [v["key"] for v in body["variants"]] == ["short", "long"]
    assert body["control"] == "short"


def test_variants__duplicate_key__409(tenant, two_variants):
    response = tenant.post(VARIANTS, {"key": "long"})
    assert response.status_code == 409
    assert "long" in response.json()["detail"]
    assert Variant.objects.count() == 2


def test_variants__same_key_in_another_experiment__allowed(tenant, two_variants):
    tenant.post("/products/widget/experiments", {"key": "other"})
    response = tenant.post("/products/widget/experiments/other/variants", {"key": "long"})
    assert response.status_code == 201


def test_variants__second_control__409(tenant, two_variants):
    # When a new variant claims to be the control too
    response = tenant.post(VARIANTS, {"key": "third", "is_control": True})
    # Then it is refused, naming the current control
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("the experiment has a control variant already")
    assert "short" in detail
    assert Variant.objects.count() == 2


def test_variants__patch_to_second_control__409_and_unchanged(tenant, two_variants):
    before = config_version()
    response = tenant.patch(f"{VARIANTS}/long", {"is_control": True, "weight": 5})
    assert response.status_code == 409
    assert response.json()["detail"].startswith("the experiment has a control variant already")
    assert Variant.objects.get(key="long").weight == 2.0
    assert Variant.objects.get(is_control=True).key == "short"
    assert config_version() == before


def test_variants__move_the_control__unset_then_set(tenant, two_variants):
    assert tenant.patch(f"{VARIANTS}/short", {"is_control": False}).status_code == 200
    assert tenant.patch(f"{VARIANTS}/long", {"is_control": True}).status_code == 200
    assert tenant.get(EXPERIMENT).json()["control"] == "long"


def test_variants__control_patched_as_control_again__200(tenant, two_variants):
    assert tenant.patch(f"{VARIANTS}/short", {"is_control": True}).status_code == 200


def test_variants__removed_control_still_holds_the_flag(tenant, two_variants):
    # Given the marked control is removed
    tenant.delete(f"{VARIANTS}/short")
    # Then another variant can only become the control once the flag is cleared
    assert tenant.patch(f"{VARIANTS}/long", {"is_control": True}).status_code == 409
    tenant.patch(f"{VARIANTS}/short", {"is_control": False})
    assert tenant.patch(f"{VARIANTS}/long", {"is_control": True}).status_code == 200


@pytest.mark.parametrize("patch", [{"weight": 3}, {"status": "disabled"}])
def test_variants__decide_relevant_change__bumps_config_version(tenant, two_variants, patch):
    before = config_version()
    assert tenant.patch(f"{VARIANTS}/long", patch).status_code == 200
    assert config_version() != before


def test_variants__create__bumps_config_version(tenant, experiment):
    before = config_version()
    tenant.post(VARIANTS, {"key": "a"})
    assert config_version() != before


def test_variants__rename__no_bump_and_no_audit(tenant, two_variants):
    before = config_version()
    tenant.patch(f"{VARIANTS}/long", {"name": "Long etch"})
    assert config_version() == before
    assert not AuditEvent.objects.exists()


def test_variants__delete__removes_audits_and_bumps(tenant, two_variants):
    before = config_version()
    response = tenant.delete(f"{VARIANTS}/long")
    assert response.status_code == 200
    assert response.json()["status"] == "removed"
    event = AuditEvent.objects.get()
    assert (event.actor, event.object_type, event.object_key) == (
        "alice",
        "variant",
        "etch-time/long",
    )
    assert (event.from_value, event.to_value) == ("enabled", "removed")
    assert config_version() != before
    assert [v["key"] for v in tenant.get(EXPERIMENT).json()["variants"]] == ["short"]
    # And it is restored with PATCH
    assert tenant.patch(f"{VARIANTS}/long", {"status": "enabled"}).json()["status"] == "enabled"


def test_variants__another_tenants_product__404_on_every_route(tenant, other_tenant, two_variants):
    assert other_tenant.get(VARIANTS).status_code == 404
    assert other_tenant.post(VARIANTS, {"key": "x"}).status_code == 404
    assert other_tenant.get(f"{VARIANTS}/long").status_code == 404
    assert other_tenant.patch(f"{VARIANTS}/long", {"weight": 0}).status_code == 404
    assert other_tenant.delete(f"{VARIANTS}/long").status_code == 404
    assert list(Variant.objects.values_list("key", "weight", "status")) == [
        ("short", 1.0, "enabled"),
        ("long", 2.0, "enabled"),
    ]


def test_variants__unknown_experiment_or_variant__404(tenant, two_variants):
    assert tenant.get("/products/widget/experiments/nope/variants").status_code == 404
    assert (
        tenant.post("/products/widget/experiments/nope/variants", {"key": "a"}).status_code == 404
    )
    assert tenant.get(f"{VARIANTS}/nope").status_code == 404
    assert tenant.patch(f"{VARIANTS}/nope", {"weight": 1}).status_code == 404
    assert tenant.delete(f"{VARIANTS}/nope").status_code == 404
    assert tenant.get(f"{VARIANTS}/a%00b").status_code == 404


def test_variants__variant_of_another_experiment__404(tenant, two_variants):
    tenant.post("/products/widget/experiments", {"key": "other"})
    assert tenant.get("/products/widget/experiments/other/variants/long").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"key": "Bad"},
        {"key": "a/b"},
        {"key": "nul\x00"},
        {"key": "a", "name": "nul\x00"},
        {"key": "a", "weight": -1},
        {"key": "a", "weight": -0.0001},
        {"key": "a", "weight": 1e7},
        {"key": "a", "weight": "1"},
        {"key": "a", "weight": True},
        {"key": "a", "weight": None},
        {"key": "a", "is_control": "yes"},
        {"key": "a", "is_control": 1},
        {"key": "a", "status": "removed"},
        {"key": "a", "unknown": 1},
        {},
    ],
)
def test_variants__bad_input__422_and_nothing_written(tenant, experiment, body):
    before = config_version()
    response = tenant.post(VARIANTS, body)
    assert response.status_code == 422, (body, response.content)
    assert response.json()["detail"]
    assert not Variant.objects.exists()
    assert config_version() == before


@pytest.mark.parametrize(
    "raw", [b'{"key":"a","weight":NaN}', b'{"key":"a","weight":1e999}', b"[", b"\x00"]
)
def test_variants__unparseable_or_non_finite__400(tenant, experiment, raw):
    assert tenant.post(VARIANTS, raw=raw).status_code == 400
    assert not Variant.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"weight": -1},
        {"weight": None},
        {"is_control": None},
        {"status": "gone"},
        {"key": "other"},
        {"name": "x" * 201},
    ],
)
def test_variants__bad_patch__422_and_unchanged(tenant, two_variants, body):
    response = tenant.patch(f"{VARIANTS}/long", body)
    assert response.status_code == 422, (body, response.content)
    row = Variant.objects.get(key="long")
    assert (row.name, row.weight, row.status, row.is_control) == ("long", 2.0, "enabled", False)


def test_variants__control_race_lost_to_a_concurrent_write__409_not_500(
    tenant, two_variants, monkeypatch
):
    # Given the pre-check runs before a concurrent request commits its own control
    # (simulated: the first check sees nothing, so the database constraint decides)
    from lab.services import variants as services

    real_check = services._raise_conflict
    calls = []

    def check_too_early(**kwargs):
        calls.append(kwargs)
        if len(calls) > 1:
            real_check(**kwargs)

    monkeypatch.setattr(services, "_raise_conflict", check_too_early)
    before = config_version()
    # When
    response = tenant.post(VARIANTS, {"key": "third", "is_control": True})
    # Then the unique constraint's violation is answered as a 409, and nothing is written
    assert response.status_code == 409
    assert response.json()["detail"].startswith("the experiment has a control variant already")
    assert Variant.objects.count() == 2
    assert config_version() == before
