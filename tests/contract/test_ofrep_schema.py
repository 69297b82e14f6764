"""The OFREP schema the tests validate answers with (tests/contract/ofrep_schema.py) really
refuses what the protocol refuses, so that a valid verdict means something."""

import pytest

from tests.contract.ofrep_schema import REASONS, problems


@pytest.mark.parametrize(
    ("endpoint", "status", "body"),
    [
        ("single", 200, {"key": "etch", "value": "long", "variant": "long", "reason": "SPLIT"}),
        ("single", 200, {"key": "etch", "value": "", "variant": "", "reason": "DISABLED"}),
        # codeDefaultFlag (ADR 0006): no value, use the caller's default
        ("single", 200, {"key": "etch", "variant": "", "reason": "DISABLED"}),
        ("single", 200, {"key": "etch", "reason": "SPLIT"}),
        ("single", 200, {"key": "f", "value": True, "reason": "STATIC", "metadata": {"a": 1}}),
        ("single", 400, {"key": "etch", "errorCode": "PARSE_ERROR", "errorDetails": "x"}),
        ("single", 404, {"key": "etch", "errorCode": "FLAG_NOT_FOUND"}),
        ("single", 401, None),
        ("bulk", 200, {"flags": []}),
        ("bulk", 200, {"flags": [{"key": "etch", "value": "a", "reason": "TARGETING_MATCH"}]}),
        ("bulk", 200, {"flags": [{"key": "etch", "variant": "", "reason": "SPLIT"}]}),
        ("bulk", 200, {"flags": [{"key": "etch", "errorCode": "GENERAL"}]}),
        ("bulk", 400, {"errorCode": "TARGETING_KEY_MISSING"}),
        ("bulk", 304, None),
    ],
)
def test_ofrep_schema__valid_answers__accepted(endpoint, status, body):
    assert problems(endpoint, status, body) == []


@pytest.mark.parametrize(
    ("endpoint", "status", "body", "why"),
    [
        ("single", 200, {"key": "etch", "variant": "", "reason": "DEFAULT"}, "reason enum"),
        ("single", 200, {"key": "etch", "value": "a"}, "no reason"),
        ("single", 200, {"value": "a", "reason": "SPLIT"}, "no key"),
        ("single", 200, {"key": "etch", "reason": "SPLIT", "variant": 3}, "variant type"),
        ("single", 200, {"key": "etch", "value": "a", "reason": "DEFAULT"}, "reason enum"),
        ("single", 200, {"key": "etch", "value": "a", "reason": "ERROR"}, "reason enum"),
        ("single", 200, {"key": "etch", "value": None, "reason": "SPLIT"}, "null value"),
        ("single", 200, {"key": 3, "value": "a", "reason": "SPLIT"}, "key type"),
        ("single", 200, {"value": "a", "metadata": {"a": [1]}}, "metadata value"),
        ("single", 404, {"key": "etch", "errorCode": "GENERAL"}, "404 is FLAG_NOT_FOUND"),
        ("single", 400, {"key": "etch", "errorCode": "FLAG_NOT_FOUND"}, "400 error codes"),
        ("single", 400, {"errorCode": "PARSE_ERROR"}, "400 without key"),
        ("single", 422, {"detail": []}, "not a protocol status"),
        ("bulk", 200, {}, "no flags"),
        ("bulk", 200, {"flags": [{"key": "etch", "value": None, "reason": "SPLIT"}]}, "null"),
        ("bulk", 200, {"flags": [{"reason": "DISABLED"}]}, "flag without key"),
        ("bulk", 304, {"flags": []}, "a 304 with a body"),
    ],
)
def test_ofrep_schema__invalid_answers__refused(endpoint, status, body, why):
    assert problems(endpoint, status, body), why


def test_ofrep_schema__reasons__the_protocols_five():
    assert REASONS == ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]
