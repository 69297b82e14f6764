"""OFREP: the shapes, reasons and error codes of the OpenFeature Remote Evaluation Protocol.

Every answer these tests get is validated against the protocol's response schema
(tests/contract/ofrep_schema.py). tests/e2e/test_e2e_openfeature.py drives these endpoints with
the OpenFeature Python SDK and the JavaScript server and web SDKs.
"""

from datetime import timedelta

import orjson
import pytest
import requests
from django.utils import timezone
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import ErrorCode, Reason

from decide.ofrep import REASONS
from lab.models import Assignment, Layer, Unit
from rules.bucketing import layer_position
from rules.vocabulary import Reason as LabReason
from tests.contract import ofrep_schema
from tests.decide.conftest import (
    DecideClient,
    expected_variant,
    make_experiment,
    unit_for,
    variant,
)
from tests.factories import AssignmentFactory, UnitFactory

FLAG = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture(autouse=True)
def _every_answer_valid(monkeypatch):
    """Every OFREP answer a test gets must be valid under the protocol's schema."""
    post = DecideClient.post

    def validated(self, path, *args, **kwargs):
        response = post(self, path, *args, **kwargs)
        if path.startswith("/ofrep/"):
            ofrep_schema.assert_valid("bulk" if path == BULK else "single", response)
        return response

    monkeypatch.setattr(DecideClient, "post", validated)


def test_ofrep__every_reason__one_of_the_protocols():
    # Every reason Lab can answer with maps to a reason of the OFREP schema
    answered = set(LabReason) - {LabReason.UNKNOWN}
    assert set(REASONS) == answered
    assert set(REASONS.values()) <= set(ofrep_schema.REASONS)


def test_ofrep__assigned_unit__value_and_variant_are_the_variant_key(decider):
    # Given
    etch = make_experiment(decider.product, "etch", [("short", 1), ("long", 1)])
    # When
    response = decider.flag("etch", "SN-1")
    # Then
    assert response.status_code == 200
    expected = expected_variant(etch, "SN-1")
    assert response.json() == {
        "key": "etch",
        "value": expected,
        "variant": expected,
        "reason": "SPLIT",
    }
    # And it is the same stored assignment the decide API answers
    assert Assignment.objects.get().variant.key == expected
    assert decider.decide("SN-1") == {"etch": expected}
    assert decider.flag("etch", "SN-1").json()["reason"] == "SPLIT"


def test_ofrep__forced_assignment__targeting_match(decider):
    etch = make_experiment(decider.product, "etch")
    unit = UnitFactory(product=decider.product, key=unit_for(etch, "a"))
    AssignmentFactory(experiment=etch, unit=unit, variant=variant(etch, "b"), source="forced")
    body = decider.flag("etch", unit.key).json()
    assert (body["value"], body["variant"], body["reason"]) == ("b", "b", "TARGETING_MATCH")


def _paused(decider):
    # A unit assigned, then the experiment paused
    etch = make_experiment(decider.product, "etch")
    assert decider.flag("etch", "SN-1").json()["value"] in ("a", "b")
    decider.change(etch, status="disabled")
    return "SN-1", {}


def _product_disabled(decider):
    make_experiment(decider.product, "etch")
    decider.change(decider.product, status="disabled")
    return "SN-1", {}


def _off_schedule(decider):
    etch = make_experiment(decider.product, "etch")
    now = timezone.now()
    decider.change(etch, start_at=now + timedelta(hours=1), end_at=now + timedelta(hours=2))
    return "SN-1", {}


def _outside_coverage(decider):
    etch = make_experiment(decider.product, "etch", coverage=0.3)
    return unit_for(etch, None), {}


def _outside_layer_slot(decider):
    etch = make_experiment(decider.product, "etch")
    layer = Layer.objects.create(product=decider.product, key="etch")
    decider.change(etch, layer=layer, layer_start=0.0, layer_end=0.5)
    unit = next(u for u in (f"SN-{i}" for i in range(100)) if layer_position(layer.salt, u) >= 0.5)
    return unit, {}


def _no_eligible_variant(decider):
    # Every variant closed: a unit without an assignment gets none
    make_experiment(decider.product, "etch", [("a", 0), ("b", 0)])
    return "SN-1", {}


def _targeted_out(decider):
    etch = make_experiment(decider.product, "etch")
    decider.change(etch, conditions=[{"attribute": "line", "operator": "in", "values": ["3"]}])
    return "SN-1", {"line": "1"}


@pytest.mark.parametrize(
    ("situation", "reason"),
    [
        (_paused, "DISABLED"),
        (_product_disabled, "DISABLED"),
        (_off_schedule, "DISABLED"),
        (_outside_coverage, "SPLIT"),
        (_outside_layer_slot, "SPLIT"),
        (_no_eligible_variant, "SPLIT"),
        (_targeted_out, "TARGETING_MATCH"),
    ],
    ids=lambda case: getattr(case, "__name__", case).strip("_"),
)
def test_ofrep__no_variant__success_without_value_so_the_caller_keeps_its_default(
    decider, situation, reason
):
    # Given a unit decide answers null for
    unit, attributes = situation(decider)
    assignments = Assignment.objects.count()
    assert decider.decide(unit, experiments=["etch"], attributes=attributes) == {"etch": None}
    # When OFREP evaluates the flag for it
    context = {"targetingKey": unit, **attributes}
    response = decider.post(FLAG.format("etch"), {"context": context})
    # Then the answer is a success with its reason and no value (the protocol's
    # codeDefaultFlag, valid under its schema: the fixture above), nothing stored
    assert response.status_code == 200
    body = response.json()
    assert "value" not in body
    assert body == {"key": "etch", "reason": reason, "variant": ""}
    assert Assignment.objects.count() == assignments
    # And the bulk evaluation says the same for the flag
    flags = decider.post(BULK, {"context": context}).json()["flags"]
    assert [flag for flag in flags if flag["key"] == "etch"] == [body]


def test_ofrep__product_disabled__unknown_flag_still_unknown(decider):
    make_experiment(decider.product, "etch")
    decider.change(decider.product, status="disabled")
    assert decider.flag("nope", "SN-1").status_code == 404
    assert not Unit.objects.exists()


@pytest.mark.parametrize("key", ["nope", "Not-A-Key", "x" * 65, "gone"])
def test_ofrep__unknown_or_removed_flag__404_flag_not_found(decider, key):
    make_experiment(decider.product, "gone", status="removed")
    response = decider.flag(key, "SN-1")
    assert response.status_code == 404
    body = response.json()
    assert (body["key"], body["errorCode"]) == (key, "FLAG_NOT_FOUND")
    assert body["errorDetails"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "PARSE_ERROR"),
        (b"[]", "PARSE_ERROR"),
        (b'"context"', "PARSE_ERROR"),
        (b"", "TARGETING_KEY_MISSING"),
        (b"{}", "TARGETING_KEY_MISSING"),
        (b'{"context": {}}', "TARGETING_KEY_MISSING"),
        (b'{"context": {"targetingKey": ""}}', "TARGETING_KEY_MISSING"),
        (b'{"context": {"targetingKey": null, "plan": "pro"}}', "TARGETING_KEY_MISSING"),
        (b'{"context": "SN-1"}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 12}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": "lot/1"}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": " SN-1"}}', "INVALID_CONTEXT"),
    ],
)
def test_ofrep__bad_request__400_with_error_code(decider, raw, code):
    make_experiment(decider.product, "etch")
    single = decider.post(FLAG.format("etch"), raw=raw)
    assert single.status_code == 400
    assert single.json()["key"] == "etch"
    assert single.json()["errorCode"] == code
    assert single.json()["errorDetails"]
    bulk = decider.post(BULK, raw=raw)
    assert bulk.status_code == 400
    assert bulk.json()["errorCode"] == code
    assert bulk.json()["errorDetails"]
    assert not Unit.objects.exists()


def test_ofrep__other_context_fields__are_attributes(decider):
    make_experiment(decider.product, "etch")
    body = {"context": {"targetingKey": "SN-1", "plan": "pro", "line": 3, "tags": ["a"]}}
    assert decider.post(FLAG.format("etch"), body).status_code == 200


def test_ofrep__context_field_that_is_not_an_attribute__invalid_context_naming_it(decider):
    make_experiment(decider.product, "etch")
    body = {"context": {"targetingKey": "SN-1", "plan": "pro", "nested": {"a": [1, 2]}}}
    for path in (FLAG.format("etch"), BULK):
        response = decider.post(path, body)
        assert response.status_code == 400
        assert response.json()["errorCode"] == "INVALID_CONTEXT"
        assert "'nested'" in response.json()["errorDetails"]
    assert not Unit.objects.exists()


@pytest.mark.parametrize("path", [FLAG.format("etch"), BULK])
def test_ofrep__bad_key__401_even_with_a_bad_body(decider, path):
    make_experiment(decider.product, "etch")
    body = {"context": {"targetingKey": "SN-1"}}
    assert decider.post(path, body, key="").status_code == 401
    assert decider.post(path, body, key="lck_0123456789ab_nope").status_code == 401
    assert decider.post(path, raw=b"{not json", key="lck_0123456789ab_nope").status_code == 401
    assert decider.post(FLAG.format("nope"), body, key="lck_0123456789ab_nope").status_code == 401


def test_ofrep__x_api_key_header__accepted(decider):
    make_experiment(decider.product, "etch")
    response = decider.post(
        FLAG.format("etch"),
        {"context": {"targetingKey": "SN-1"}},
        key="",
        HTTP_X_API_KEY=decider.secret,
    )
    assert response.status_code == 200


def test_ofrep_bulk__every_enabled_and_paused_flag(decider):
    # Given
    etch = make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal", coverage=0.0)
    make_experiment(decider.product, "paused", status="disabled")
    make_experiment(decider.product, "gone", status="removed")
    # When
    response = decider.post(BULK, {"context": {"targetingKey": "SN-1"}})
    # Then
    assert response.status_code == 200
    expected = expected_variant(etch, "SN-1")
    assert response.json() == {
        "flags": [
            {"key": "etch", "value": expected, "variant": expected, "reason": "SPLIT"},
            {"key": "anneal", "variant": "", "reason": "SPLIT"},
            {"key": "paused", "variant": "", "reason": "DISABLED"},
        ]
    }
    assert response["ETag"]


def test_ofrep_bulk__if_none_match__304_until_something_changes(decider):
    # Given
    etch = make_experiment(decider.product, "etch", [("a", 1)])
    body = {"context": {"targetingKey": "SN-1"}}
    etag = decider.post(BULK, body)["ETag"]
    # Then the same evaluation is not sent again
    unchanged = decider.post(BULK, body, HTTP_IF_NONE_MATCH=f'W/"nope", {etag}')
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert "Content-Type" not in unchanged
    assert unchanged["ETag"] == etag
    # And a change gives a new body and tag
    decider.change(etch, status="disabled")
    changed = decider.post(BULK, body, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_ofrep__openfeature_sdk_in_process(decider, monkeypatch):
    # Given the OFREP provider of the OpenFeature Python SDK, over the test client
    etch = make_experiment(decider.product, "etch", [("short", 1), ("long", 1)])
    make_experiment(decider.product, "paused", status="disabled")
    provider = OFREPProvider(
        "http://testserver", headers_factory=lambda: {"Authorization": f"Bearer {decider.secret}"}
    )
    provider.session = _TestClientSession(decider.client)
    openfeature.set_provider(provider, domain="lab-in-process")
    client = openfeature.get_client("lab-in-process")
    context = EvaluationContext(targeting_key="SN-1")
    # Then a running experiment gives the unit's variant
    details = client.get_string_details("etch", "fallback", context)
    assert (details.value, details.variant, details.reason) == (
        expected_variant(etch, "SN-1"),
        expected_variant(etch, "SN-1"),
        Reason.SPLIT,
    )
    # A paused one gives the caller's default, without an error
    paused = client.get_string_details("paused", "fallback", context)
    assert (paused.value, paused.reason, paused.error_code) == ("fallback", Reason.DISABLED, None)
    assert client.get_string_value("paused", "standard", context) == "standard"
    # An unknown one gives the default with FLAG_NOT_FOUND
    missing = client.get_string_details("nope", "fallback", context)
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    # No targeting key: TARGETING_KEY_MISSING
    anonymous = client.get_string_details("etch", "fallback", EvaluationContext())
    assert anonymous.error_code == ErrorCode.TARGETING_KEY_MISSING


class _TestClientSession:
    """Enough of requests.Session for the OFREP provider, over Django's test client."""

    def __init__(self, client):
        self.client = client

    def post(self, url, json=None, timeout=None, headers=None):
        path = url.removeprefix("http://testserver")
        extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
        response = self.client.post(
            path, data=orjson.dumps(json or {}), content_type="application/json", **extra
        )
        result = requests.Response()
        result.status_code = response.status_code
        result._content = response.content
        result.headers.update(dict(response.items()))
        result.url = url
        return result
