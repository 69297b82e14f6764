"""Decide with targeting (docs/decide.md, "Targeting, schedules and layers"): the rule order
schedule -> stored assignment -> layer -> conditions -> coverage and weights, through the
decide API, batch and OFREP, with the database budget of untargeted decisions."""

from datetime import timedelta

import pytest
from django.utils import timezone

from lab.models import Assignment, Layer, Unit
from rules.bucketing import layer_position
from tests.decide.conftest import make_experiment, variant

LINE_3 = [{"attribute": "line", "operator": "in", "values": ["3"]}]
FLAG = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


def decide(decider, unit: str, attributes=None, **filters) -> dict:
    body = {"unit": unit, **filters}
    if attributes is not None:
        body["attributes"] = attributes
    response = decider.post("/api/v1/decide", body)
    assert response.status_code == 200, response.content
    return response.json()["variants"]


def flag(decider, key: str, unit: str, **context):
    response = decider.post(FLAG.format(key), {"context": {"targetingKey": unit, **context}})
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def line_3(decider):
    experiment = make_experiment(decider.product, "etch-time")
    decider.change(experiment, conditions=LINE_3)
    return experiment


def test_decide__conditions__only_matching_units_get_a_variant_and_misses_store_nothing(
    decider, line_3
):
    # When units of line 3 and of line 1 are decided
    on_3 = decide(decider, "SN-3", {"line": "3"})
    on_1 = decide(decider, "SN-1", {"line": "1"})
    unknown = decide(decider, "SN-0")
    # Then only the line-3 unit is in the experiment, and only it is stored
    assert on_3["etch-time"] in ("a", "b")
    assert on_1 == unknown == {"etch-time": None}
    assert list(Unit.objects.values_list("key", flat=True)) == ["SN-3"]
    assert Assignment.objects.count() == 1


def test_decide__number_attribute__matches_by_its_json_text(decider, line_3):
    assert decide(decider, "SN-3", {"line": 3})["etch-time"] is not None
    assert decide(decider, "SN-4", {"line": 3.0})["etch-time"] is not None
    assert decide(decider, "SN-5", {"line": "3.0"})["etch-time"] is None


def test_decide__unit_created_by_decide__stores_the_attributes_it_came_with(decider, line_3):
    decide(decider, "SN-3", {"line": "3", "lot_type": "B"})
    assert Unit.objects.get(key="SN-3").attributes == {"line": "3", "lot_type": "B"}


def test_decide__stored_attributes__overlaid_key_by_key_by_the_request(decider, line_3):
    # Given units whose stored attributes say line 3
    Unit.objects.create(product=decider.product, key="SN-A", attributes={"line": "3", "x": "1"})
    Unit.objects.create(product=decider.product, key="SN-B", attributes={"line": "3"})
    # Then the stored attributes count, and a request's attribute wins over a stored one
    assert decide(decider, "SN-A")["etch-time"] is not None
    assert decide(decider, "SN-B", {"line": "1"})["etch-time"] is None
    # And decide never rewrites the attributes of a unit that exists
    assert Unit.objects.get(key="SN-B").attributes == {"line": "3"}


def test_decide__never_uses_another_units_attributes(decider, line_3):
    Unit.objects.create(product=decider.product, key="SN-2", attributes={"line": "3"})
    assert decide(decider, "SN-1")["etch-time"] is None


def test_decide__conditions_change__assigned_units_keep_their_variant(decider, line_3):
    # Given a line-3 unit assigned
    assigned = decide(decider, "SN-3", {"line": "3"})["etch-time"]
    # When the experiment is narrowed to line 4 and the unit moves to line 1
    decider.change(line_3, conditions=[{"attribute": "line", "operator": "in", "values": ["4"]}])
    # Then its stored assignment wins, while a new line-3 unit is no longer admitted
    assert decide(decider, "SN-3", {"line": "1"})["etch-time"] == assigned
    assert decide(decider, "SN-33", {"line": "3"})["etch-time"] is None


def test_decide__forced_assignment__ignores_conditions(decider, line_3):
    unit = Unit.objects.create(product=decider.product, key="SN-F")
    Assignment.objects.create(
        experiment=line_3, unit=unit, variant=variant(line_3, "b"), source="forced"
    )
    assert decide(decider, "SN-F", {"line": "1"})["etch-time"] == "b"
    assert flag(decider, "etch-time", "SN-F", line="1")["reason"] == "TARGETING_MATCH"


def test_decide__outside_schedule__null_and_stored_assignment_comes_back(decider):
    # Given an assigned unit
    experiment = make_experiment(decider.product, "night-shift")
    assigned = decide(decider, "SN-1")["night-shift"]
    now = timezone.now()
    # When the experiment's window has not opened yet
    decider.change(experiment, start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=2))
    # Then nobody gets a variant, nothing new is stored, and OFREP says DISABLED with no value
    # (the caller's default)
    assert decide(decider, "SN-1") == decide(decider, "SN-2") == {"night-shift": None}
    answer = flag(decider, "night-shift", "SN-1")
    assert answer["reason"] == "DISABLED" and "value" not in answer
    assert Assignment.objects.count() == 1
    # And once the window is open (it ends later), the stored assignment comes back
    decider.change(experiment, start_at=now - timedelta(hours=1), end_at=now + timedelta(hours=1))
    assert decide(decider, "SN-1")["night-shift"] == assigned
    # After the window closed, the experiment answers null again
    decider.change(experiment, start_at=None, end_at=now - timedelta(seconds=1))
    assert decide(decider, "SN-1")["night-shift"] is None


def test_decide__layer_50_50__every_unit_in_exactly_one_experiment(decider):
    # Given two experiments sharing a layer, half each
    layer = Layer.objects.create(product=decider.product, key="etch")
    time_ = make_experiment(decider.product, "etch-time")
    chem = make_experiment(decider.product, "etch-chem")
    decider.change(time_, layer=layer, layer_start=0.0, layer_end=0.5)
    decider.change(chem, layer=layer, layer_start=0.5, layer_end=1.0)
    units = [f"SN-{i}" for i in range(200)]
    # When a batch of units is decided
    decisions = decider.batch(units)
    # Then each unit is in exactly the experiment its layer position says
    for unit, decision in zip(units, decisions, strict=True):
        variants = decision["variants"]
        expected = "etch-time" if layer_position(layer.salt, unit) < 0.5 else "etch-chem"
        assert [key for key, value in variants.items() if value is not None] == [expected]
    in_time = sum(1 for d in decisions if d["variants"]["etch-time"])
    assert 70 < in_time < 130
    # And OFREP reports a layer miss as the layer's split left the unit out, not as an error
    outside = next(u for u in units if layer_position(layer.salt, u) >= 0.5)
    answer = flag(decider, "etch-time", outside)
    assert answer["reason"] == "SPLIT" and "value" not in answer
    assert "errorCode" not in answer


def test_batch__mixes_keys_and_objects_with_per_unit_attributes(decider, line_3):
    response = decider.post(
        "/api/v1/decide/batch",
        {
            "units": [
                {"key": "SN-3", "attributes": {"line": "3"}},
                "SN-1",
                {"key": "SN-4", "attributes": {"line": "4"}},
                {"key": "SN-5"},
            ]
        },
    )
    assert response.status_code == 200, response.content
    got = {d["unit"]: d["variants"]["etch-time"] for d in response.json()["decisions"]}
    assert got["SN-3"] is not None
    assert got["SN-1"] is got["SN-4"] is got["SN-5"] is None
    assert Unit.objects.get(key="SN-3").attributes == {"line": "3"}


def test_batch__bad_attributes__422_naming_the_unit_and_attribute(decider, line_3):
    response = decider.post(
        "/api/v1/decide/batch",
        {"units": ["SN-1", {"key": "SN-2", "attributes": {"line": {"nested": 1}}}]},
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"][:3] == ["body", "units", 1] and "'line'" in error["msg"]
    assert not Unit.objects.exists()


def test_decide__bad_attributes__422_naming_the_attribute(decider, line_3):
    for bad in ({"9line": "3"}, {"line": None}, {"tags": ["a", 1]}, {"line": "x" * 257}):
        response = decider.post("/api/v1/decide", {"unit": "SN-1", "attributes": bad})
        assert response.status_code == 422, (bad, response.content)
        assert next(iter(bad)) in str(response.json()["detail"])


def test_ofrep__context_fields__are_attributes_and_a_miss_is_no_variant(decider, line_3):
    hit = flag(decider, "etch-time", "SN-3", line="3")
    assert hit["reason"] == "SPLIT" and hit["value"] in ("a", "b")
    miss = flag(decider, "etch-time", "SN-1", line="1")
    assert miss["reason"] == "TARGETING_MATCH" and "value" not in miss
    assert "errorCode" not in miss
    bulk = decider.post(BULK, {"context": {"targetingKey": "SN-1", "line": "1"}}).json()
    assert bulk["flags"] == [miss]


# The database budget: targeting costs no round trip ----------------------------------------


@pytest.fixture
def three_targeted(decider):
    layer = Layer.objects.create(product=decider.product, key="etch")
    for i, key in enumerate(("etch", "anneal", "litho")):
        experiment = make_experiment(decider.product, key, [("a", 1), ("b", 1), ("c", 1)])
        decider.change(
            experiment,
            conditions=[
                {"attribute": "line", "operator": "in", "values": ["3"]},
                {"attribute": "fw", "operator": "semver_gte", "values": ["2.3.0"]},
            ],
            start_at=timezone.now() - timedelta(days=1),
            **({"layer": layer, "layer_start": 0.0, "layer_end": 1.0} if i == 0 else {}),
        )
    Unit.objects.create(product=decider.product, key="SN-1", attributes={"fw": "2.4.0"})
    decide(decider, "WARM-UP")
    return decider


def test_queries__known_unit_three_targeted_experiments__one_round_trip(
    three_targeted, django_assert_num_queries
):
    # Given a unit assigned to three targeted experiments (stored fw, line sent)
    assigned = decide(three_targeted, "SN-1", {"line": "3"})
    assert all(assigned.values())
    # Then deciding it again is one statement, as for untargeted experiments
    with django_assert_num_queries(1):
        assert decide(three_targeted, "SN-1", {"line": "3"}) == assigned


def test_queries__unassigned_known_unit_failing_conditions__one_round_trip(
    three_targeted, django_assert_num_queries
):
    with django_assert_num_queries(1):
        assert set(decide(three_targeted, "SN-1", {"line": "1"}).values()) == {None}


def test_queries__batch_targeted__one_read_one_write(three_targeted, django_assert_num_queries):
    from tests.conftest import requires_postgres

    requires_postgres()
    units = [{"key": f"SN-{i}", "attributes": {"line": "3", "fw": "3.0.0"}} for i in range(100)]
    with django_assert_num_queries(2):
        response = three_targeted.post("/api/v1/decide/batch", {"units": units})
    assert response.status_code == 200
    assert Assignment.objects.count() == 300
    with django_assert_num_queries(1):
        three_targeted.post("/api/v1/decide/batch", {"units": units})


# The cached config carries the targeting ------------------------------------------------------


def test_config_entry__targeting_round_trips_through_the_shared_cache(decider, line_3):
    from decide import config

    # Given a worker that compiled the targeted config (and shared it)
    assert decide(decider, "SN-3", {"line": "3"})["etch-time"] is not None
    # When another worker (empty memory) reads it from the shared cache
    config.clear_memory()
    # Then it decides by the same conditions
    assert decide(decider, "SN-1", {"line": "1"})["etch-time"] is None
    assert decide(decider, "SN-33", {"line": "3"})["etch-time"] is not None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: e.update(conditions=[{"attribute": "line", "operator": "eq", "values": []}]),
        lambda e: e.update(
            conditions=[{"attribute": "fw", "operator": "semver_gt", "values": ["x"]}]
        ),
        lambda e: e.update(start_at=10.0, end_at=5.0),
        lambda e: e.update(layer={"salt": "s", "start": 0.5, "end": 0.5}),
        lambda e: e.update(layer={"salt": "s", "start": 0.0}),
    ],
)
def test_config_entry__bad_targeting__refused_like_any_bad_entry(decider, line_3, tamper):
    from decide import config

    product = decider.product
    product.refresh_from_db()
    entry = config._load(product.id, product.config_version)
    tamper(entry["experiments"][0])
    raw = config.encode_entry(entry)
    with pytest.raises(config.RejectedEntry):
        config.decode_entry(raw, product.id, entry["version"])
