"""The OFREP response contract, to validate every OFREP answer the tests see.

Restated (same component names, same constraints) from the OpenFeature Remote Evaluation
Protocol's OpenAPI definition: repository open-feature/protocol, file service/openapi.yaml,
`info.version` 0.1.0 (commit 05d5b22c33bd51c6ec7820338598d5b734a3f04a), Apache-2.0. Two notes
on versions of that file:

- the reason: an earlier revision (commit 1d31e7b7c3b70882a53dd3f8bc7a68e5197e22d7) had it as
  `enum: [STATIC, TARGETING_MATCH, SPLIT, DISABLED, UNKNOWN]`; 0.1.0 keeps the same five as
  `examples`. Lab answers only these five, so the stricter enum is what is checked here
  (`DEFAULT`, `CACHED`, `ERROR`... are OpenFeature SDK reasons, not OFREP answers);
- the value: later revisions (0.2.0, OFREP ADR 0006) add `codeDefaultFlag`, a success without
  `value`. Lab's answers always carry a value (see docs/decide.md, "OpenFeature: OFREP"), which
  is valid under every revision, so the 0.1.0 rule (`value` required) is checked.

Schemas are OpenAPI 3.1 schema objects, validated with openapi-schema-validator.
"""

from openapi_schema_validator import OAS31Validator

REASONS = ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]


def _typed(json_type: str) -> dict:
    return {"properties": {"value": {"type": json_type}}, "required": ["value"]}


SCHEMAS = {
    "key": {"type": "string"},
    "errorDetails": {"type": "string"},
    "booleanFlag": _typed("boolean"),
    "stringFlag": _typed("string"),
    "integerFlag": _typed("integer"),
    "floatFlag": _typed("number"),
    "objectFlag": _typed("object"),
    "evaluationSuccess": {
        "allOf": [
            {
                "properties": {
                    "key": {"$ref": "#/components/schemas/key"},
                    "reason": {"type": "string", "enum": REASONS},
                    "variant": {"type": "string"},
                    "metadata": {
                        "type": "object",
                        "additionalProperties": {
                            "oneOf": [{"type": "boolean"}, {"type": "string"}, {"type": "number"}]
                        },
                    },
                }
            },
            {
                "oneOf": [
                    {"$ref": "#/components/schemas/booleanFlag"},
                    {"$ref": "#/components/schemas/stringFlag"},
                    {"$ref": "#/components/schemas/integerFlag"},
                    {"$ref": "#/components/schemas/floatFlag"},
                    {"$ref": "#/components/schemas/objectFlag"},
                ]
            },
        ]
    },
    "serverEvaluationSuccess": {
        "allOf": [
            {"$ref": "#/components/schemas/evaluationSuccess"},
            {"properties": {"cacheable": {"type": "boolean"}}},
        ]
    },
    "evaluationFailure": {
        "properties": {
            "key": {"$ref": "#/components/schemas/key"},
            "errorCode": {
                "type": "string",
                "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"],
            },
            "errorDetails": {"$ref": "#/components/schemas/errorDetails"},
        },
        "required": ["key", "errorCode"],
    },
    "flagNotFound": {
        "properties": {
            "key": {"$ref": "#/components/schemas/key"},
            "errorCode": {"type": "string", "enum": ["FLAG_NOT_FOUND"]},
            "errorDetails": {"$ref": "#/components/schemas/errorDetails"},
        },
        "required": ["key", "errorCode"],
    },
    "bulkEvaluationSuccess": {
        "type": "object",
        "required": ["flags"],
        "properties": {
            "flags": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/evaluationSuccess"},
                        {"$ref": "#/components/schemas/evaluationFailure"},
                    ]
                },
            }
        },
    },
    "bulkEvaluationFailure": {
        "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
        "required": ["errorCode"],
    },
    "generalErrorResponse": {
        "properties": {"errorDetails": {"$ref": "#/components/schemas/errorDetails"}}
    },
}

# The responses of the two evaluation endpoints, by status (401/403/429 have no body schema;
# a 304 has no body).
SINGLE = {
    200: "serverEvaluationSuccess",
    400: "evaluationFailure",
    404: "flagNotFound",
    500: "generalErrorResponse",
}
BULK = {200: "bulkEvaluationSuccess", 400: "bulkEvaluationFailure", 500: "generalErrorResponse"}
WITHOUT_BODY_SCHEMA = {401, 403, 429}


def _validator(component: str) -> OAS31Validator:
    schema = {"$ref": f"#/components/schemas/{component}", "components": {"schemas": SCHEMAS}}
    return OAS31Validator(schema)


def problems(endpoint: str, status: int, body) -> list[str]:
    """What is wrong with one answer of `endpoint` ("single" or "bulk"); [] when valid."""
    responses = {"single": SINGLE, "bulk": BULK}[endpoint]
    if status == 304 and endpoint == "bulk":
        return [] if body in (None, b"", "") else ["a 304 has no body"]
    if status in WITHOUT_BODY_SCHEMA:
        return []
    if status not in responses:
        return [f"status {status} is not an answer the protocol defines for {endpoint}"]
    errors = _validator(responses[status]).iter_errors(body)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in errors]


def assert_valid(endpoint: str, response) -> None:
    """Assert that a Django test-client or requests response is a valid OFREP answer."""
    status = response.status_code
    raw = response.content
    if status == 304:
        assert raw == b"", raw
        assert "text/html" not in response.headers.get("Content-Type", ""), response.headers
        return
    if status in WITHOUT_BODY_SCHEMA:
        return
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    found = problems(endpoint, status, response.json())
    assert not found, (status, response.json(), found)
