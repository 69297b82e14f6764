"""Lab as an OpenFeature provider: the real OpenFeature Python SDK with its OFREP provider,
against a real gunicorn."""

import pytest
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import ErrorCode, Reason

pytestmark = pytest.mark.e2e


def _client(server, key: str, domain: str):
    provider = OFREPProvider(
        server.base_url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}, timeout=10
    )
    openfeature.set_provider(provider, domain=domain)
    return openfeature.get_client(domain)


def test_e2e__openfeature_sdk__variants_defaults_and_errors(server, seeded):
    # Given
    key, product = seeded["client_key"], seeded["product"]
    client = _client(server, key, f"lab-{product}")
    unit = EvaluationContext(targeting_key="OF-1", attributes={"line": "3"})
    # When a running experiment is evaluated
    details = client.get_string_details("etch", "fallback", unit)
    # Then the SDK gets the unit's variant, the same one the decide API answers
    assert details.value in ("short", "long")
    assert details.variant == details.value
    assert details.reason == Reason.SPLIT
    assert details.error_code is None
    assert server.decide(key, "OF-1", experiments=["etch"]) == {"etch": details.value}
    assert client.get_string_value("etch", "fallback", unit) == details.value

    # A paused experiment: the code default, as a successful evaluation
    server.orm("set_experiment_status", product=product, experiment="anneal", status="disabled")
    paused = client.get_string_details("anneal", "fallback", unit)
    assert (paused.value, paused.reason, paused.error_code) == (
        "fallback",
        Reason.DISABLED,
        None,
    )
    # An unknown flag: the default with FLAG_NOT_FOUND
    missing = client.get_string_details("no-such-flag", "fallback", unit)
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    # No targeting key: TARGETING_KEY_MISSING
    anonymous = client.get_string_details("etch", "fallback", EvaluationContext())
    assert (anonymous.value, anonymous.error_code) == ("fallback", ErrorCode.TARGETING_KEY_MISSING)
    # A value of another type: TYPE_MISMATCH, default kept
    as_bool = client.get_boolean_details("etch", False, unit)
    assert (as_bool.value, as_bool.error_code) == (False, ErrorCode.TYPE_MISMATCH)


def test_e2e__openfeature_sdk__bad_key__default_with_error(server, seeded):
    client = _client(server, "lck_0123456789ab_wrong", "lab-bad-key")
    details = client.get_string_details("etch", "fallback", EvaluationContext(targeting_key="U"))
    assert details.value == "fallback"
    assert details.error_code == ErrorCode.GENERAL


def test_e2e__ofrep_bulk__etag_round_trip(server, seeded):
    key = seeded["client_key"]
    body = {"context": {"targetingKey": "OF-BULK"}}
    first = server.post("/ofrep/v1/evaluate/flags", body, key)
    assert first.status_code == 200
    assert [flag["key"] for flag in first.json()["flags"]] == ["etch", "anneal", "litho"]
    again = server.post(
        "/ofrep/v1/evaluate/flags", body, key, **{"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304


def test_e2e__openfeature_sdk__context_attributes_get_the_targeted_answer(server, seeded):
    import requests

    # Given etch targeted at line 3 through the admin API
    key, product, token = seeded["client_key"], seeded["product"], seeded["api_token"]
    response = requests.patch(
        server.url(f"/api/admin/v1/products/{product}/experiments/etch"),
        json={"conditions": [{"attribute": "line", "operator": "in", "values": ["3"]}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    client = _client(server, key, f"lab-targeted-{product}")
    # When the SDK evaluates it for a line-3 unit and a line-1 unit
    on_3 = client.get_string_details(
        "etch", "fallback", EvaluationContext(targeting_key="OF-T3", attributes={"line": "3"})
    )
    on_1 = client.get_string_details(
        "etch", "fallback", EvaluationContext(targeting_key="OF-T1", attributes={"line": 1})
    )
    # Then the line-3 unit gets its variant, the other the code default, neither an error
    assert on_3.value in ("short", "long") and on_3.error_code is None
    assert (on_1.value, on_1.reason, on_1.error_code) == ("fallback", Reason.DEFAULT, None)
    assert server.decide(key, "OF-T3", experiments=["etch"]) == {"etch": on_3.value}
