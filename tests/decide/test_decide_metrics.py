"""Prometheus metrics of the decide API: fixed names, bounded labels, counts that add up."""

import pytest
from prometheus_client import REGISTRY

from decide.metrics import outcome_of
from tests.decide.conftest import make_experiment
from tests.factories import VariantFactory


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def delta():
    """How much a sample grew since the test started."""
    names = [
        ("lab_decide_requests_total", {"endpoint": e, "outcome": o})
        for e in ("decide", "batch", "ofrep")
        for o in ("ok", "unauthorized", "bad_request", "too_large", "not_found", "not_modified")
    ]
    names += [
        ("lab_decide_duration_seconds_count", {"endpoint": e}) for e in ("decide", "batch", "ofrep")
    ]
    names += [("lab_assignments_created_total", {}), ("lab_assignments_rebucketed_total", {})]
    before = {(n, tuple(sorted(labels.items()))): sample(n, **labels) for n, labels in names}

    def grown(name: str, **labels) -> float:
        return sample(name, **labels) - before[(name, tuple(sorted(labels.items())))]

    return grown


def test_metrics__requests_counted_by_endpoint_and_outcome(decider, delta):
    # Given
    make_experiment(decider.product, "etch")
    # When
    for i in range(3):
        decider.decide(f"SN-{i}")
    decider.batch(["SN-1", "SN-9"])
    decider.flag("etch", "SN-1")
    decider.flag("nope", "SN-1")
    decider.post("/api/v1/decide", {"unit": "SN-1"}, key="lck_0123456789ab_nope")
    decider.post("/api/v1/decide", {"unit": "bad/unit"})
    decider.post("/api/v1/decide/batch", {"units": ["x"] * 1001})
    # Then
    assert delta("lab_decide_requests_total", endpoint="decide", outcome="ok") == 3
    assert delta("lab_decide_requests_total", endpoint="decide", outcome="unauthorized") == 1
    assert delta("lab_decide_requests_total", endpoint="decide", outcome="bad_request") == 1
    assert delta("lab_decide_requests_total", endpoint="batch", outcome="ok") == 1
    assert delta("lab_decide_requests_total", endpoint="batch", outcome="too_large") == 1
    assert delta("lab_decide_requests_total", endpoint="ofrep", outcome="ok") == 1
    assert delta("lab_decide_requests_total", endpoint="ofrep", outcome="not_found") == 1
    assert delta("lab_decide_duration_seconds_count", endpoint="decide") == 5
    assert delta("lab_decide_duration_seconds_count", endpoint="batch") == 2
    assert delta("lab_decide_duration_seconds_count", endpoint="ofrep") == 2


def test_metrics__assignments_created_counts_stored_rows_only(decider, delta):
    make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal", coverage=0.0)  # never stores anything
    decider.batch([f"SN-{i}" for i in range(10)])
    decider.batch([f"SN-{i}" for i in range(15)])
    decider.decide("SN-1")
    assert delta("lab_assignments_created_total") == 15


def test_metrics__rebucketings_counted(decider, delta):
    etch = make_experiment(decider.product, "etch", [("a", 1)])
    decider.batch(["SN-1", "SN-2"])
    VariantFactory(experiment=etch, key="b")
    decider.change(etch.variants.get(key="a"), status="removed")
    decider.batch(["SN-1", "SN-2"])
    assert delta("lab_assignments_rebucketed_total") == 2


def test_metrics__labels_never_carry_tenant_keys(decider, client):
    # Given decisions with distinctive product, experiment and unit keys
    make_experiment(decider.product, "secret-experiment-key")
    decider.decide("SECRET-UNIT-KEY")
    decider.flag("secret-experiment-key", "SECRET-UNIT-KEY")
    decider.flag("unknown-flag-key", "SECRET-UNIT-KEY")
    # Then the exposition holds none of them
    text = client.get("/metrics").content.decode()
    assert "lab_decide_requests_total" in text
    for key in ("secret-experiment-key", "SECRET-UNIT-KEY", "unknown-flag-key", "widget"):
        assert key not in text


def test_metrics__duration_buckets_below_a_millisecond(client, db):
    text = client.get("/metrics").content.decode()
    assert 'lab_decide_duration_seconds_bucket{endpoint="decide",le="0.00025"}' in text


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (304, "not_modified"),
        (400, "bad_request"),
        (401, "unauthorized"),
        (404, "not_found"),
        (405, "bad_request"),
        (413, "too_large"),
        (422, "bad_request"),
        (500, "error"),
        (503, "unavailable"),
    ],
)
def test_metrics__outcome_of_status(status, outcome):
    assert outcome_of(status) == outcome
