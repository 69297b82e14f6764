"""OpenFeature Remote Evaluation Protocol (OFREP): any OpenFeature SDK can use Lab as provider.

A flag is an experiment, its value and variant are the unit's variant key, and the context's
`targetingKey` is the unit key. Shapes, reasons and error codes follow the OFREP OpenAPI
definition (open-feature/protocol, service/openapi.yaml):

- a stored or new assignment: `value` = `variant` = the variant key, reason `SPLIT`
  (`TARGETING_MATCH` for an operator's forced assignment);
- no variant (paused experiment or disabled product: reason `DISABLED`; unit outside
  coverage or no eligible variant: reason `DEFAULT`): `value` is left out, which tells the
  SDK to use the default in its code (OFREP ADR 0006), and `variant` is `SdkDefault` (not a
  valid variant key, so it never clashes with one);
- 400 `PARSE_ERROR` (body not JSON / not an object), `TARGETING_KEY_MISSING`,
  `INVALID_CONTEXT` (context not an object, targetingKey not a unit key); 404
  `FLAG_NOT_FOUND`; 401 for a missing or bad client key (checked first).
"""

import hashlib

import orjson
from django.http import HttpResponse
from ninja import Router
from ninja.decorators import decorate_view

from decide import decisions, store
from decide.auth import ClientKeyAuth, ClientKeyHeader
from decide.decisions import Answer, Reason
from decide.metrics import observed
from decide.schemas import (
    UNIT_KEY_DESCRIPTION,
    UNIT_KEY_JSON_PATTERN,
    ErrorOut,
    OfrepBulkEvaluation,
    OfrepBulkFailure,
    OfrepEvaluation,
    OfrepEvaluationFailure,
)
from lab.keys import is_valid_key, unit_key_problem

router = Router(tags=["OFREP"], auth=[ClientKeyAuth(), ClientKeyHeader()])

SDK_DEFAULT_VARIANT = "SdkDefault"

_REASONS = {
    Reason.ASSIGNED: "SPLIT",
    Reason.STORED: "SPLIT",
    Reason.REBUCKETED: "SPLIT",
    Reason.FORCED: "TARGETING_MATCH",
    Reason.PAUSED: "DISABLED",
    Reason.DISABLED: "DISABLED",
    Reason.OUTSIDE: "DEFAULT",
}

_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["context"],
                    "properties": {
                        "context": {
                            "type": "object",
                            "description": "Evaluation context; other attributes are accepted "
                            "and ignored.",
                            "required": ["targetingKey"],
                            "properties": {
                                "targetingKey": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": 128,
                                    "pattern": UNIT_KEY_JSON_PATTERN,
                                    "description": UNIT_KEY_DESCRIPTION,
                                }
                            },
                        }
                    },
                },
                "example": {"context": {"targetingKey": "SN-1"}},
            }
        },
    }
}


class _ContextError(Exception):
    def __init__(self, code: str, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), content_type="application/json", status=status)


def _targeting_key(request) -> str:
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise _ContextError("PARSE_ERROR", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _ContextError("PARSE_ERROR", 'the body must be a JSON object: {"context": {...}}')
    context = body.get("context")
    if context is None:
        raise _ContextError(
            "TARGETING_KEY_MISSING", "context.targetingKey (the unit key) is required"
        )
    if not isinstance(context, dict):
        raise _ContextError("INVALID_CONTEXT", "context must be a JSON object")
    unit = context.get("targetingKey")
    if unit is None or unit == "":
        raise _ContextError(
            "TARGETING_KEY_MISSING", "context.targetingKey (the unit key) is required"
        )
    if not isinstance(unit, str):
        raise _ContextError("INVALID_CONTEXT", "context.targetingKey must be a string")
    problem = unit_key_problem(unit)
    if problem:
        raise _ContextError("INVALID_CONTEXT", f"context.targetingKey: {problem}")
    return unit


def evaluation(key: str, answer: Answer) -> dict:
    if answer.variant is None:
        return {"key": key, "reason": _REASONS[answer.reason], "variant": SDK_DEFAULT_VARIANT}
    return {
        "key": key,
        "value": answer.variant,
        "reason": _REASONS[answer.reason],
        "variant": answer.variant,
    }


@router.post(
    "/ofrep/v1/evaluate/flags/{key}",
    response={
        200: OfrepEvaluation,
        400: OfrepEvaluationFailure,
        401: ErrorOut,
        404: OfrepEvaluationFailure,
    },
    summary="OFREP: evaluate one flag (experiment) for context.targetingKey (unit)",
    openapi_extra=_REQUEST_BODY,
)
@decorate_view(observed("ofrep"))
def evaluate_flag(request, key: str):
    try:
        unit = _targeting_key(request)
    except _ContextError as exc:
        store.verify_key(request.auth)
        return _json({"key": key, "errorCode": exc.code, "errorDetails": exc.details}, 400)
    if not is_valid_key(key):
        store.verify_key(request.auth)
        answer = Answer(None, Reason.UNKNOWN)
    else:
        decided = decisions.decide(request.auth, (unit,), experiments=(key,))
        answer = decided.answers[unit][key]
    if answer.reason == Reason.UNKNOWN:
        details = f"no experiment {key!r} in this product"
        return _json({"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": details}, 404)
    return _json(evaluation(key, answer))


@router.post(
    "/ofrep/v1/evaluate/flags",
    response={200: OfrepBulkEvaluation, 304: None, 400: OfrepBulkFailure, 401: ErrorOut},
    summary="OFREP: evaluate every flag (enabled and paused experiment) for a unit",
    openapi_extra=_REQUEST_BODY,
)
@decorate_view(observed("ofrep"))
def evaluate_flags(request):
    try:
        unit = _targeting_key(request)
    except _ContextError as exc:
        store.verify_key(request.auth)
        return _json({"errorCode": exc.code, "errorDetails": exc.details}, 400)
    decided = decisions.decide(request.auth, (unit,), include_paused=True)
    flags = [evaluation(key, answer) for key, answer in decided.answers[unit].items()]
    body = orjson.dumps({"flags": flags})
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    if _entity_tags(request.headers.get("If-None-Match", "")) & {etag, "*"}:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    return response


def _entity_tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
