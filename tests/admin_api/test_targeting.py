"""Targeting through the admin API: unit attributes, experiment conditions and schedules,
layers and their overlap rule, the config version and the audit trail."""

import threading
from datetime import datetime
from urllib.parse import quote

import pytest
from django.db import close_old_connections

from lab.models import AuditEvent, Experiment, Layer, Product, Unit
from tests.conftest import requires_postgres

LINE_3 = [{"attribute": "line", "operator": "in", "values": ["3"]}]


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


def unit_path(key: str) -> str:
    return "/products/widget/units/" + quote(key, safe="")


def create_experiment(tenant, key: str, **fields):
    body = {"key": key, "variants": [{"key": "a"}, {"key": "b"}], **fields}
    return tenant.post("/products/widget/experiments", body)


@pytest.fixture
def layer(tenant, product):
    response = tenant.post("/products/widget/layers", {"key": "etch", "name": "Etch recipes"})
    assert response.status_code == 201, response.content
    return response.json()


# Unit attributes ------------------------------------------------------------------------------


def test_units__bulk_upsert_with_attributes__creates_and_replaces(tenant, product):
    # Given a unit with attributes
    tenant.post("/products/widget/units", {"units": [{"key": "SN-1", "attributes": {"line": "1"}}]})
    # When a batch mixes bare keys and rows with attributes
    response = tenant.post(
        "/products/widget/units",
        {
            "units": [
                "SN-1",
                {"key": "SN-2", "attributes": {"line": "3", "fw": "2.3.0", "tags": ["hot"]}},
                {"key": "SN-1", "attributes": {"line": 3, "rework": True}},
                {"key": "SN-3"},
            ]
        },
    )
    # Then new units get theirs, the existing one's are replaced, bare keys change nothing
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 2, "existing": 1, "updated": 1}
    stored = dict(Unit.objects.values_list("key", "attributes"))
    assert stored == {
        "SN-1": {"line": 3, "rework": True},
        "SN-2": {"line": "3", "fw": "2.3.0", "tags": ["hot"]},
        "SN-3": {},
    }


def test_units__bare_key__keeps_stored_attributes(tenant, product):
    tenant.post("/products/widget/units", {"units": [{"key": "SN-1", "attributes": {"line": "3"}}]})
    tenant.post("/products/widget/units", {"units": ["SN-1"]})
    assert tenant.get(unit_path("SN-1")).json()["attributes"] == {"line": "3"}


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"9line": "3"}, "9line"),
        ({"line": "x" * 257}, "line"),
        ({"line": None}, "line"),
        ({"line": {"nested": True}}, "line"),
        ({"tags": ["a", 1]}, "tags"),
        ({"tags": ["a"] * 101}, "tags"),
        ({f"a{i}": 1 for i in range(51)}, "at most 50"),
    ],
)
def test_units__bad_attribute__422_naming_it_and_nothing_written(
    tenant, product, attributes, named
):
    response = tenant.post(
        "/products/widget/units",
        {"units": ["SN-ok", {"key": "SN-bad", "attributes": attributes}]},
    )
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert error["loc"][:3] == ["body", "units", 1]
    assert named in error["msg"]
    assert Unit.objects.count() == 0


def test_units__attribute_number_at_the_bound__reads_back_as_written(tenant, product):
    # Given numbers at the documented bound, one written with an exponent
    attributes = {"big": 2**53 - 1, "small": -(2**53 - 1), "tiny": 1e-7}
    tenant.post("/products/widget/units", {"units": [{"key": "SN-1", "attributes": attributes}]})
    # Then the unit reads them back unchanged
    assert tenant.get(unit_path("SN-1")).json()["attributes"] == attributes


@pytest.mark.parametrize("number", [2**53, -3.402823466e38, 1e300])
def test_units__attribute_number_beyond_the_bound__422(tenant, product, number):
    # Given a number PostgreSQL's jsonb would read back as an integer of 17 to 301 digits
    # When a unit is stored with it
    response = tenant.post(
        "/products/widget/units", {"units": [{"key": "SN-1", "attributes": {"size": number}}]}
    )
    # Then it is refused, naming the bound (before: stored, and reading the unit was a 500)
    assert response.status_code == 422, response.content
    assert not Unit.objects.exists()
    assert "size" in response.json()["detail"][0]["msg"]
    assert str(2**53 - 1) in response.json()["detail"][0]["msg"]


def test_units__same_unit_given_attributes_twice__422_and_nothing_written(tenant, product):
    response = tenant.post(
        "/products/widget/units",
        {
            "units": [
                {"key": "SN-1", "attributes": {"a": 1}},
                {"key": "SN-1", "attributes": {"a": 2}},
            ]
        },
    )
    assert response.status_code == 400, response.content
    assert "index 0" in response.json()["detail"][0]["msg"]
    assert Unit.objects.count() == 0


def test_units__patch__replaces_attributes_and_get_shows_them(tenant, product):
    tenant.post("/products/widget/units", {"units": [{"key": "SN-1", "attributes": {"line": "1"}}]})
    response = tenant.patch(unit_path("SN-1"), {"attributes": {"lot_type": "B"}})
    assert response.status_code == 200, response.content
    assert response.json()["attributes"] == {"lot_type": "B"}
    assert tenant.get(unit_path("SN-1")).json()["attributes"] == {"lot_type": "B"}
    listed = tenant.get("/products/widget/units").json()["items"]
    assert listed[0]["attributes"] == {"lot_type": "B"}


def test_units__patch_bad_attributes__422_and_unchanged(tenant, product):
    tenant.post("/products/widget/units", {"units": [{"key": "SN-1", "attributes": {"line": "1"}}]})
    response = tenant.patch(unit_path("SN-1"), {"attributes": {"line": float("nan")}})
    assert response.status_code in (400, 422)
    response = tenant.patch(unit_path("SN-1"), {"attributes": {"line": [1]}})
    assert response.status_code == 422
    assert "line" in response.json()["detail"][0]["msg"]
    assert tenant.get(unit_path("SN-1")).json()["attributes"] == {"line": "1"}


def test_units__patch_unknown_unit__404(tenant, product):
    assert tenant.patch(unit_path("SN-404"), {"attributes": {}}).status_code == 404


# Conditions and schedules ---------------------------------------------------------------------


def test_experiments__conditions__stored_shown_bumped_and_audited(tenant, product):
    # Given an experiment for line 3 only
    response = create_experiment(tenant, "etch-time", conditions=LINE_3)
    assert response.status_code == 201, response.content
    assert response.json()["conditions"] == LINE_3
    before = config_version()
    # When its conditions change
    new = [
        {"attribute": "fw", "operator": "semver_gte", "values": ["2.3.0"]},
        {"attribute": "standard", "operator": "not_exists"},
    ]
    response = tenant.patch("/products/widget/experiments/etch-time", {"conditions": new})
    # Then they are stored (values normalised), decide is told, and the audit trail has it
    assert response.status_code == 200, response.content
    assert response.json()["conditions"] == [new[0], {**new[1], "values": []}]
    assert config_version() != before
    event = AuditEvent.objects.filter(action="conditions_changed").first()
    assert (event.object_key, event.actor) == ("etch-time", "alice")
    assert '"line"' in event.from_value and '"fw"' in event.to_value


@pytest.mark.parametrize(
    ("conditions", "index", "problem"),
    [
        (
            [LINE_3[0], {"attribute": "fw", "operator": "semver_gte", "values": ["2.3"]}],
            1,
            "SemVer",
        ),
        ([{"attribute": "n", "operator": "num_gt", "values": ["x"]}], 0, "number"),
        ([LINE_3[0], LINE_3[0], {"attribute": "a", "operator": "exists", "values": [1]}], 2, "no"),
        ([{"attribute": "a", "operator": "in", "values": []}], 0, "at least one"),
    ],
)
def test_experiments__malformed_condition__422_with_its_index_nothing_written(
    tenant, product, conditions, index, problem
):
    response = create_experiment(tenant, "etch-time", conditions=conditions)
    assert response.status_code == 422, response.content
    detail = str(response.json()["detail"])
    assert f"condition {index}" in detail and problem in detail
    assert not Experiment.objects.exists()


def test_experiments__unknown_operator__422_with_its_index(tenant, product):
    response = create_experiment(
        tenant, "etch-time", conditions=[LINE_3[0], {"attribute": "a", "operator": "eq"}]
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][-3:] == ["conditions", 1, "operator"]


def test_experiments__schedule__validated_stored_bumped_audited(tenant, product):
    start, end = "2026-12-07T06:00:00+01:00", "2026-12-11T22:00:00+01:00"
    response = create_experiment(tenant, "etch-time", start_at=start, end_at=end)
    assert response.status_code == 201, response.content
    shown = tenant.get("/products/widget/experiments/etch-time").json()
    assert datetime.fromisoformat(shown["start_at"]) == datetime.fromisoformat(start)
    assert datetime.fromisoformat(shown["end_at"]) == datetime.fromisoformat(end)
    # start_at must stay before end_at, whichever of them a PATCH changes
    before = config_version()
    response = tenant.patch("/products/widget/experiments/etch-time", {"end_at": start})
    assert response.status_code == 422
    assert "before end_at" in response.json()["detail"]
    assert config_version() == before
    response = tenant.patch(
        "/products/widget/experiments/etch-time", {"end_at": "2026-12-12T22:00:00+01:00"}
    )
    assert response.status_code == 200
    assert config_version() != before
    events = AuditEvent.objects.filter(action="schedule_changed").order_by("id")
    assert [e.to_value.split("/")[1][:10] for e in events] == ["2026-12-11", "2026-12-12"]


def test_experiments__schedule_without_offset__422(tenant, product):
    response = create_experiment(tenant, "etch-time", start_at="2026-12-07T06:00:00")
    assert response.status_code == 422


# Layers ---------------------------------------------------------------------------------------


def test_layers__crud__salt_random_and_immutable(tenant, product, layer):
    assert len(layer["salt"]) >= 16 and layer["status"] == "enabled"
    other = tenant.post("/products/widget/layers", {"key": "anneal"}).json()
    assert other["salt"] != layer["salt"]
    assert tenant.post("/products/widget/layers", {"key": "etch"}).status_code == 409
    assert tenant.patch("/products/widget/layers/etch", {"salt": "mine"}).status_code == 422
    assert tenant.patch("/products/widget/layers/etch", {"name": "Etch"}).json()["name"] == "Etch"
    assert tenant.get("/products/widget/layers/etch").json()["salt"] == layer["salt"]
    assert [item["key"] for item in tenant.get("/products/widget/layers").json()["items"]] == [
        "etch",
        "anneal",
    ]
    assert tenant.delete("/products/widget/layers/anneal").json()["status"] == "removed"
    assert tenant.get("/products/widget/layers").json()["count"] == 1
    assert tenant.get("/products/widget/layers/nope").status_code == 404


def test_layers__two_experiments_sharing_it_50_50__both_allowed_and_listed(tenant, layer):
    first = create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 0.5])
    second = create_experiment(tenant, "etch-chem", layer="etch", layer_range=[0.5, 1])
    assert first.status_code == second.status_code == 201, (first.content, second.content)
    assert second.json()["layer"] == "etch" and second.json()["layer_range"] == [0.5, 1.0]
    members = tenant.get("/products/widget/layers/etch").json()["experiments"]
    assert [(m["key"], m["layer_range"]) for m in members] == [
        ("etch-time", [0.0, 0.5]),
        ("etch-chem", [0.5, 1.0]),
    ]


def test_layers__overlapping_create__409_naming_the_other_and_nothing_written(tenant, layer):
    create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 0.5])
    response = create_experiment(tenant, "etch-chem", layer="etch", layer_range=[0.4, 1])
    assert response.status_code == 409
    assert "etch-time" in response.json()["detail"]
    assert not Experiment.objects.filter(key="etch-chem").exists()


def test_layers__moving_a_range_onto_another__409_and_unchanged(tenant, layer):
    create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 0.5])
    create_experiment(tenant, "etch-chem", layer="etch", layer_range=[0.5, 1])
    before = config_version()
    response = tenant.patch("/products/widget/experiments/etch-chem", {"layer_range": [0.25, 1]})
    assert response.status_code == 409 and "etch-time" in response.json()["detail"]
    assert Experiment.objects.get(key="etch-chem").layer_start == 0.5
    assert config_version() == before


def test_layers__disabled_experiments_may_overlap_until_enabled(tenant, layer):
    create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 0.6])
    response = create_experiment(
        tenant, "etch-chem", layer="etch", layer_range=[0.5, 1], status="disabled"
    )
    assert response.status_code == 201
    response = tenant.patch("/products/widget/experiments/etch-chem", {"status": "enabled"})
    assert response.status_code == 409 and "etch-time" in response.json()["detail"]
    assert Experiment.objects.get(key="etch-chem").status == "disabled"
    # Once the other is paused, it may be enabled
    tenant.patch("/products/widget/experiments/etch-time", {"status": "disabled"})
    response = tenant.patch("/products/widget/experiments/etch-chem", {"status": "enabled"})
    assert response.status_code == 200


def test_layers__moving_into_another_layer__checked_there(tenant, layer):
    tenant.post("/products/widget/layers", {"key": "anneal"})
    create_experiment(tenant, "anneal-temp", layer="anneal", layer_range=[0, 1])
    create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 0.5])
    response = tenant.patch("/products/widget/experiments/etch-time", {"layer": "anneal"})
    assert response.status_code == 409 and "anneal-temp" in response.json()["detail"]
    # Out of any layer: range cleared, audited, bumped
    before = config_version()
    response = tenant.patch("/products/widget/experiments/etch-time", {"layer": None})
    assert response.status_code == 200, response.content
    assert (response.json()["layer"], response.json()["layer_range"]) == (None, None)
    assert config_version() != before
    event = AuditEvent.objects.filter(action="layer_changed").first()
    assert (event.from_value, event.to_value) == ("etch[0, 0.5)", "")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"layer": "etch"}, 422),
        ({"layer_range": [0, 0.5]}, 422),
        ({"layer": "etch", "layer_range": [0.5, 0.5]}, 422),
        ({"layer": "etch", "layer_range": [0.5, 0.2]}, 422),
        ({"layer": "etch", "layer_range": [0, 1.5]}, 422),
        ({"layer": "etch", "layer_range": [0, 1, 2]}, 422),
        ({"layer": "nope", "layer_range": [0, 1]}, 422),
    ],
)
def test_layers__bad_membership__refused_and_nothing_written(tenant, layer, fields, status):
    response = create_experiment(tenant, "etch-time", **fields)
    assert response.status_code == status, response.content
    assert response.json()["detail"]
    assert not Experiment.objects.exists()


def test_layers__remove_with_experiments__409_then_allowed_once_empty(tenant, layer):
    create_experiment(tenant, "etch-time", layer="etch", layer_range=[0, 1])
    response = tenant.delete("/products/widget/layers/etch")
    assert response.status_code == 409 and "etch-time" in response.json()["detail"]
    tenant.patch("/products/widget/experiments/etch-time", {"layer": None})
    assert tenant.delete("/products/widget/layers/etch").json()["status"] == "removed"
    response = create_experiment(tenant, "etch-chem", layer="etch", layer_range=[0, 1])
    assert response.status_code == 422 and "removed" in response.json()["detail"]


def test_layers__another_tenant__404(tenant, other_tenant, layer):
    assert other_tenant.get("/products/widget/layers/etch").status_code == 404
    assert other_tenant.delete("/products/widget/layers/etch").status_code == 404
    assert Layer.objects.get(key="etch").status == "enabled"


@pytest.mark.django_db(transaction=True)
def test_layers__concurrent_overlapping_creates__exactly_one_wins(tenant, product, layer):
    requires_postgres()
    # Given many requests racing to put overlapping experiments into one layer
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def create(i: int) -> None:
        try:
            barrier.wait()
            response = create_experiment(tenant, f"racer-{i}", layer="etch", layer_range=[0, 0.6])
            statuses.append(response.status_code)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly one of them is in the layer, and the others were told why
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409], statuses
    assert Experiment.objects.filter(layer__key="etch").count() == 1
