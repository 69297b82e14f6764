"""OpenFeature Remote Evaluation Protocol (OFREP): any OpenFeature SDK can use Lab as provider.

A flag is an experiment, its value and variant are the unit's variant key, and the context's
`targetingKey` is the unit key. Shapes, reasons and error codes follow the OFREP OpenAPI
definition (open-feature/protocol, service/openapi.yaml):

- a stored or new assignment: `value` = `variant` = the variant key, reason `SPLIT`
  (`TARGETING_MATCH` for an operator's forced assignment);
- no variant (decide answers null): a success **without `value`**, the protocol's
  `codeDefaultFlag` (OFREP ADR 0006: use the code default), so the SDK hands the caller the
  default it passed; `variant` = `""` (never a variant key); reason `DISABLED` (paused
  experiment, disabled product, a schedule outside its window), `SPLIT` (the split left the
  unit out: outside coverage, outside the experiment's layer slot, or no eligible variant) or
  `TARGETING_MATCH` (the experiment's conditions turned the unit away). See docs/decide.md,
  "OpenFeature: OFREP", for what each OpenFeature provider reports for it;
- the context's fields other than `targetingKey` are the unit's attributes for this
  decision (docs/decide.md, "Targeting");
- 400 `PARSE_ERROR` (body not JSON / not an object), `TARGETING_KEY_MISSING`,
  `INVALID_CONTEXT` (context not an object, targetingKey not a unit key, a context field
  that is not a valid attribute); 404
  `FLAG_NOT_FOUND`; 401 for a missing or bad client key (checked first: a request refused
  before any decision raises `OfrepError`, which decide.api answers after the key check).
"""

import hashlib

import orjson
from django.http import HttpResponse
from ninja import Router
from ninja.decorators import decorate_view

from decide import decisions
from decide.auth import ClientKeyAuth, ClientKeyHeader
from decide.decisions import Answer
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
from lab.schema_types import ATTRIBUTE_VALUE_JSON_SCHEMA
from rules.keys import is_valid_key, unit_key_problem
from rules.targeting import (
    ATTRIBUTE_NAME_PATTERN,
    MAX_ATTRIBUTES,
    TargetingError,
    check_attributes,
)
from rules.vocabulary import Reason

router = Router(tags=["OFREP"], auth=[ClientKeyAuth(), ClientKeyHeader()])

# The variant of an answer without a value: a string no variant key can be. It is sent, not
# left out, because the Python provider (openfeature-provider-ofrep 0.3.0) reads `variant`
# from every success and reports a GENERAL error when it is missing.
NO_VARIANT = ""

# Lab's reasons (rules.vocabulary.Reason) in the protocol's words, all from its reason list
# (STATIC, TARGETING_MATCH, SPLIT, DISABLED, UNKNOWN: DEFAULT is an SDK reason, not an OFREP
# answer). Reason.UNKNOWN is not an evaluation: it answers 404 FLAG_NOT_FOUND.
REASONS = {
    Reason.HASH: "SPLIT",
    Reason.STORED: "SPLIT",
    Reason.REBUCKETED: "SPLIT",
    Reason.FORCED: "TARGETING_MATCH",
    Reason.PAUSED: "DISABLED",
    Reason.DISABLED: "DISABLED",
    Reason.OUTSIDE: "SPLIT",
    Reason.OFF_SCHEDULE: "DISABLED",
    # A layer is a hash split of its own; a condition miss is what the targeting rules chose.
    Reason.OUTSIDE_LAYER: "SPLIT",
    Reason.NOT_TARGETED: "TARGETING_MATCH",
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
                            "description": "Evaluation context: targetingKey is the unit key; "
                            "the other fields are the unit's attributes for this decision.",
                            "required": ["targetingKey"],
                            # The attributes' rules (docs/decide.md, "Targeting").
                            "maxProperties": MAX_ATTRIBUTES + 1,
                            "propertyNames": {"pattern": ATTRIBUTE_NAME_PATTERN},
                            "additionalProperties": ATTRIBUTE_VALUE_JSON_SCHEMA,
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


class OfrepError(Exception):
    """A request OFREP refuses before deciding anything: answered with `body` and `status`
    once the client key is known to be good (decide.api)."""

    def __init__(self, status: int, code: str, details: str, flag: str | None = None):
        super().__init__(details)
        self.status = status
        self.body = {"errorCode": code, "errorDetails": details}
        if flag is not None:
            self.body = {"key": flag, **self.body}


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), content_type="application/json", status=status)


def targeting_key(request, flag: str | None = None) -> tuple[str, dict]:
    """The unit key of the request's context and the attributes its other fields are;
    raises OfrepError (400) for a bad body."""

    def refuse(code: str, details: str) -> OfrepError:
        return OfrepError(400, code, details, flag)

    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise refuse("PARSE_ERROR", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise refuse("PARSE_ERROR", 'the body must be a JSON object: {"context": {...}}')
    context = body.get("context")
    if context is None:
        raise refuse("TARGETING_KEY_MISSING", "context.targetingKey (the unit key) is required")
    if not isinstance(context, dict):
        raise refuse("INVALID_CONTEXT", "context must be a JSON object")
    unit = context.get("targetingKey")
    if unit is None or unit == "":
        raise refuse("TARGETING_KEY_MISSING", "context.targetingKey (the unit key) is required")
    if not isinstance(unit, str):
        raise refuse("INVALID_CONTEXT", "context.targetingKey must be a string")
    problem = unit_key_problem(unit)
    if problem:
        raise refuse("INVALID_CONTEXT", f"context.targetingKey: {problem}")
    try:
        attributes = check_attributes({k: v for k, v in context.items() if k != "targetingKey"})
    except TargetingError as exc:
        raise refuse("INVALID_CONTEXT", f"context: {exc}") from exc
    return unit, attributes


def flag_not_found(flag: str) -> dict:
    details = f"no experiment {flag!r} in this product"
    return {"key": flag, "errorCode": "FLAG_NOT_FOUND", "errorDetails": details}


def evaluation(key: str, answer: Answer) -> dict:
    reason = REASONS[answer.reason]
    if answer.variant is None:
        # No `value`: the protocol's codeDefaultFlag, the caller's default is the answer.
        return {"key": key, "reason": reason, "variant": NO_VARIANT}
    return {"key": key, "value": answer.variant, "reason": reason, "variant": answer.variant}


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
    unit, attributes = targeting_key(request, key)
    if not is_valid_key(key):
        body = flag_not_found(key)
        raise OfrepError(404, body["errorCode"], body["errorDetails"], key)
    decided = decisions.decide(
        request.auth,
        (unit,),
        experiments=(key,),
        attributes={unit: attributes},
        handed=request.META.pop(decisions.HANDED_ENVIRON_KEY, None),
    )
    answer = decided.answers[unit][key]
    if answer.reason == Reason.UNKNOWN:
        return _json(flag_not_found(key), 404)
    return _json(evaluation(key, answer))


@router.post(
    "/ofrep/v1/evaluate/flags",
    response={200: OfrepBulkEvaluation, 304: None, 400: OfrepBulkFailure, 401: ErrorOut},
    summary="OFREP: evaluate every flag (enabled and paused experiment) for a unit",
    openapi_extra=_REQUEST_BODY,
)
@decorate_view(observed("ofrep"))
def evaluate_flags(request):
    unit, attributes = targeting_key(request)
    decided = decisions.decide(
        request.auth, (unit,), include_paused=True, attributes={unit: attributes}
    )
    flags = [evaluation(key, answer) for key, answer in decided.answers[unit].items()]
    body = orjson.dumps({"flags": flags})
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    if _entity_tags(request.headers.get("If-None-Match", "")) & {etag, "*"}:
        response = HttpResponse(status=304)
        del response["Content-Type"]  # no body, so no media type (not Django's text/html)
    else:
        response = HttpResponse(body, content_type="application/json")
    response["ETag"] = etag
    return response


def _entity_tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
