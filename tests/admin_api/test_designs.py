"""Designed experiments: POST/GET/DELETE /products/{p}/designs (docs/designs.md)."""

import pytest

from lab.models import AuditEvent, DesignFactor, Product

DESIGNS = "/products/widget/designs"
FACTORS = ["etch-time", "anneal-temp", "dose", "rinse", "bake", "clean", "dry"]


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


def make_factor(tenant, key, variants=("low", "high"), **fields):
    created = tenant.post("/products/widget/experiments", {"key": key, **fields})
    assert created.status_code == 201, created.content
    for variant in variants:
        made = tenant.post(f"/products/widget/experiments/{key}/variants", {"key": variant})
        assert made.status_code == 201, made.content


@pytest.fixture
def factors(tenant, product):
    for key in FACTORS:
        make_factor(tenant, key)
    return FACTORS


def test_designs__create_2_7_4__answers_the_fraction_and_its_runs(tenant, factors):
    # Given seven experiments with two variants each
    before = config_version()
    # When
    created = tenant.post(DESIGNS, {"key": "screen", "factors": factors, "runs": 8})
    # Then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["factors"] == factors and body["runs"] == 8 and body["status"] == "enabled"
    assert body["generators"] == ["D=AB", "E=AC", "F=BC", "G=ABC"]
    assert body["resolution"] == 3
    assert body["word_length_pattern"] == [7, 7, 0, 0, 1]
    assert body["defining_relation"][:3] == ["ABD", "ACE", "AFG"]
    assert len(body["defining_relation"]) == 15
    assert body["aliases"]["A"] == ["BD", "CE", "FG", "BCG", "BEF", "CDF", "DEG"]
    assert len(body["aliases"]) == 7 + 21
    table = body["runs_table"]
    assert [row["run"] for row in table] == list(range(1, 9))
    assert table[0]["levels"] == dict.fromkeys(factors, "low")  # run 1: every control
    assert [row["levels"]["etch-time"] for row in table] == ["low", "high"] * 4
    assert [row["levels"]["anneal-temp"] for row in table[:4]] == ["low", "low", "high", "high"]
    assert [row["levels"]["dose"] for row in table] == ["low"] * 4 + ["high"] * 4
    assert len(body["salt"]) >= 16
    assert tenant.get(f"{DESIGNS}/screen").json() == body
    assert config_version() != before
    event = AuditEvent.objects.get(object_type="design")
    assert (event.action, event.object_key, event.actor) == ("design_created", "screen", "alice")


def test_designs__full_factorial__has_no_generator_and_null_resolution(tenant, factors):
    body = tenant.post(DESIGNS, {"key": "full", "factors": factors[:3], "runs": 8}).json()
    assert body["generators"] == [] and body["resolution"] is None
    assert body["defining_relation"] == [] and body["aliases"]["A"] == []


def test_designs__control_variant__is_level_minus_one(tenant, product):
    # Given a factor whose control is its second variant
    make_factor(tenant, "a", variants=("x", "y"))
    tenant.patch("/products/widget/experiments/a/variants/y", {"is_control": True})
    make_factor(tenant, "b")
    body = tenant.post(DESIGNS, {"key": "d", "factors": ["a", "b"], "runs": 4}).json()
    assert body["runs_table"][0]["levels"] == {"a": "y", "b": "low"}


def test_designs__list_paginated_and_delete_removes_but_keeps_assignments(tenant, factors):
    tenant.post(DESIGNS, {"key": "one", "factors": factors[:3], "runs": 4})
    tenant.post(DESIGNS, {"key": "two", "factors": factors[3:6], "runs": 8})
    page = tenant.get(DESIGNS, limit=1, offset=1).json()
    assert page["count"] == 2 and [d["key"] for d in page["items"]] == ["two"]
    # When the first design is deleted
    before = config_version()
    removed = tenant.delete(f"{DESIGNS}/one")
    # Then it is removed, hidden, its factors are free again, and the version moved
    assert removed.status_code == 200 and removed.json()["status"] == "removed"
    assert [d["key"] for d in tenant.get(DESIGNS).json()["items"]] == ["two"]
    assert tenant.get(DESIGNS, status="removed").json()["items"][0]["key"] == "one"
    assert config_version() != before
    again = tenant.post(DESIGNS, {"key": "three", "factors": factors[:3], "runs": 8})
    assert again.status_code == 201, again.content
    assert DesignFactor.objects.filter(design__key="one", active=False).count() == 3


@pytest.mark.parametrize(
    "body,problem",
    [
        ({"factors": ["etch-time"], "runs": 4}, "List should have at least 2 items"),
        ({"factors": FACTORS[:3], "runs": 2}, "greater than or equal to 4"),
        ({"factors": ["etch-time", "etch-time"], "runs": 4}, "listed twice"),
        ({"factors": ["etch-time", "nope"], "runs": 4}, "no experiment 'nope'"),
        ({"factors": FACTORS, "runs": 4}, "runs for 7 factors must be one of 8, 16, 32, 64, 128"),
        ({"factors": FACTORS, "runs": 12}, "runs for 7 factors"),
        ({"factors": FACTORS[:3], "runs": 16}, "runs for 3 factors must be one of 4, 8"),
    ],
)
def test_designs__bad_factors_or_runs__422_naming_the_problem(tenant, factors, body, problem):
    response = tenant.post(DESIGNS, {"key": "bad", **body})
    assert response.status_code == 422, response.content
    assert problem in str(response.json()["detail"])
    assert not DesignFactor.objects.exists()


def test_designs__factor_with_three_variants__422(tenant, factors):
    tenant.post("/products/widget/experiments/dose/variants", {"key": "mid"})
    response = tenant.post(DESIGNS, {"key": "bad", "factors": FACTORS[:3], "runs": 8})
    assert response.status_code == 422
    assert "experiment 'dose' has 3 variants that are not removed" in response.json()["detail"]


def test_designs__factor_with_a_removed_variant_and_two_live__is_accepted(tenant, factors):
    tenant.post("/products/widget/experiments/dose/variants", {"key": "mid"})
    tenant.delete("/products/widget/experiments/dose/variants/mid")
    response = tenant.post(DESIGNS, {"key": "ok", "factors": FACTORS[:3], "runs": 8})
    assert response.status_code == 201, response.content


def test_designs__factor_in_a_layer__422(tenant, factors):
    tenant.post("/products/widget/layers", {"key": "line"})
    moved = tenant.patch(
        "/products/widget/experiments/dose", {"layer": "line", "layer_range": [0, 0.5]}
    )
    assert moved.status_code == 200, moved.content
    response = tenant.post(DESIGNS, {"key": "bad", "factors": FACTORS[:3], "runs": 8})
    assert response.status_code == 422
    assert "experiment 'dose' is in layer 'line'" in response.json()["detail"]


def test_designs__factor_of_another_design__422(tenant, factors):
    tenant.post(DESIGNS, {"key": "first", "factors": FACTORS[:3], "runs": 8})
    response = tenant.post(DESIGNS, {"key": "second", "factors": FACTORS[2:5], "runs": 8})
    assert response.status_code == 422
    assert "experiment 'dose' is a factor of design 'first'" in response.json()["detail"]


def test_designs__duplicate_key__409(tenant, factors):
    tenant.post(DESIGNS, {"key": "d", "factors": FACTORS[:2], "runs": 4})
    response = tenant.post(DESIGNS, {"key": "d", "factors": FACTORS[2:4], "runs": 4})
    assert response.status_code == 409
    assert "'d'" in response.json()["detail"]


@pytest.mark.parametrize(
    "extra",
    [{"runs": "8"}, {"runs": 8.5}, {"runs": True}, {"randomize_by": "bad name"}, {"colour": 1}],
)
def test_designs__malformed_body__422(tenant, factors, extra):
    body = {"key": "d", "factors": FACTORS[:3], "runs": 8, **extra}
    assert tenant.post(DESIGNS, body).status_code == 422


def test_designs__runs_as_an_integral_float__accepted_as_that_integer(tenant, factors):
    # JSON has one number type: 8.0 is the integer 8, as for a step's position
    response = tenant.post(DESIGNS, {"key": "d", "factors": FACTORS[:3], "runs": 8.0})
    assert response.status_code == 201, response.content
    assert response.json()["runs"] == 8


def test_designs__randomize_by__is_stored(tenant, factors):
    body = tenant.post(
        DESIGNS, {"key": "d", "factors": FACTORS[:3], "runs": 4, "randomize_by": "lot"}
    ).json()
    assert body["randomize_by"] == "lot"


def test_designs__another_tenant__404(tenant, other_tenant, factors):
    tenant.post(DESIGNS, {"key": "d", "factors": FACTORS[:3], "runs": 4})
    other_tenant.post("/products", {"key": "widget"})
    assert other_tenant.get(f"{DESIGNS}/d").status_code == 404
    assert other_tenant.delete(f"{DESIGNS}/d").status_code == 404
    assert tenant.get(f"{DESIGNS}/nope").status_code == 404


def test_designs__factor_of_a_live_design__keeps_its_variants_and_stays_out_of_layers(
    tenant, factors
):
    # Given dose is a factor of design "screen"
    created = tenant.post(DESIGNS, {"key": "screen", "factors": FACTORS[:3], "runs": 8})
    assert created.status_code == 201, created.content
    tenant.post("/products/widget/layers", {"key": "line"})
    dose = "/products/widget/experiments/dose"
    version = config_version()
    # When a variant is added or removed, or the factor moved into a layer
    added = tenant.post(f"{dose}/variants", {"key": "mid"})
    removed = tenant.delete(f"{dose}/variants/high")
    patched = tenant.patch(f"{dose}/variants/high", {"status": "removed"})
    layered = tenant.patch(dose, {"layer": "line", "layer_range": [0, 0.5]})
    # Then each is a 409 naming the design, and nothing changed
    for response in (added, removed, patched, layered):
        assert response.status_code == 409, response.content
        assert "is a factor of design 'screen'" in response.json()["detail"]
    assert config_version() == version
    assert tenant.get(f"{dose}/variants/high").json()["status"] == "enabled"
    assert tenant.get(dose).json()["layer"] is None
    # and once the design is removed, the experiment is free again
    assert tenant.delete(f"{DESIGNS}/screen").status_code in (200, 204)
    assert tenant.post(f"{dose}/variants", {"key": "mid"}).status_code == 201
