"""The OFREP response contract, to validate every OFREP answer the tests see.

Restated (same component names, same constraints) from the OpenFeature Remote Evaluation
Protocol's OpenAPI definition: repository open-feature/protocol, file service/openapi.yaml,
`info.version` 0.3.0 (commit d1a63a4e84e6297599ce566126e7764c1419f80a), Apache-2.0. The
descriptions and examples are left out; one component is restated by its meaning:

- `codeDefaultFlag` (ADR 0006, "optional value for code defaults", in the file since 0.2.0): a
  success **without** `value`, which tells the provider to use the default the caller passed.
  The file writes it as `{"type": "object", "properties": {}}`, which every object satisfies,
  so under `oneOf` it would make every answer that does carry a value match two branches and
  fail. The ADR says what is meant: the other flag types are unchanged and "no value field
  indicates codeDefaultFlag type". It is restated so: an object without `value`.

Lab answers with `codeDefaultFlag` wherever decide answers null (docs/decide.md, "OpenFeature:
OFREP"). `value: null` is none of the types (a provider reports it as TYPE_MISMATCH).

Schemas are OpenAPI 3.1 schema objects, validated with openapi-schema-validator.
"""

from openapi_schema_validator import OAS31Validator

# `enum` in the file since 0.3.0 (0.1.0 had the same five as `examples`). `DEFAULT`, `CACHED`,
# `ERROR`... are reasons the OpenFeature SDKs report themselves, not OFREP answers.
REASONS = ["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]


def _typed(json_type: str) -> dict:
    return {"type": "object", "properties": {"value": {"type": json_type}}, "required": ["value"]}


_METADATA = {"$ref": "#/components/schemas/metadata"}

SCHEMAS = {
    "key": {"type": "string"},
    "errorDetails": {"type": "string"},
    "metadata": {
        "type": "object",
        "additionalProperties": {
            "oneOf": [{"type": "boolean"}, {"type": "string"}, {"type": "number"}]
        },
    },
    "booleanFlag": _typed("boolean"),
    "stringFlag": _typed("string"),
    "integerFlag": _typed("integer"),
    "floatFlag": _typed("number"),
    "objectFlag": _typed("object"),
    "codeDefaultFlag": {"type": "object", "not": {"required": ["value"]}},
    "evaluationSuccess": {
        "type": "object",
        "required": ["key", "reason"],
        "allOf": [
            {
                "properties": {
                    "key": {"$ref": "#/components/schemas/key"},
                    "reason": {"type": "string", "enum": REASONS},
                    "variant": {"type": "string"},
                    "metadata": _METADATA,
                }
            },
            {
                "oneOf": [
                    {"$ref": "#/components/schemas/booleanFlag"},
                    {"$ref": "#/components/schemas/stringFlag"},
                    {"$ref": "#/components/schemas/integerFlag"},
                    {"$ref": "#/components/schemas/floatFlag"},
                    {"$ref": "#/components/schemas/objectFlag"},
                    {"$ref": "#/components/schemas/codeDefaultFlag"},
                ]
            },
        ],
    },
    "serverEvaluationSuccess": {"allOf": [{"$ref": "#/components/schemas/evaluationSuccess"}]},
    "evaluationFailure": {
        "type": "object",
        "properties": {
            "key": {"$ref": "#/components/schemas/key"},
            "errorCode": {
                "type": "string",
                "enum": ["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"],
            },
            "errorDetails": {"$ref": "#/components/schemas/errorDetails"},
            "metadata": _METADATA,
        },
        "required": ["key", "errorCode"],
    },
    "flagNotFound": {
        "type": "object",
        "properties": {
            "key": {"$ref": "#/components/schemas/key"},
            "errorCode": {"type": "string", "enum": ["FLAG_NOT_FOUND"]},
            "errorDetails": {"$ref": "#/components/schemas/errorDetails"},
            "metadata": _METADATA,
        },
        "required": ["key", "errorCode"],
    },
    "eventStream": {
        "type": "object",
        "required": ["type"],
        "oneOf": [
            {"required": ["url"], "not": {"required": ["endpoint"]}},
            {"required": ["endpoint"], "not": {"required": ["url"]}},
        ],
        "properties": {
            "type": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "endpoint": {
                "type": "object",
                "required": ["requestUri"],
                "properties": {
                    "origin": {"type": "string", "format": "uri"},
                    "requestUri": {"type": "string", "pattern": "^/"},
                },
            },
            "inactivityDelaySec": {"type": "integer", "minimum": 1},
        },
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
            },
            "metadata": _METADATA,
            "eventStreams": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/eventStream"},
            },
        },
    },
    "bulkEvaluationFailure": {
        "type": "object",
        "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
        "required": ["errorCode"],
    },
    "generalErrorResponse": {
        "type": "object",
        "properties": {"errorDetails": {"$ref": "#/components/schemas/errorDetails"}},
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
