"""What every Lab API shares: errors as `{"detail": ...}`, fast JSON, no 500 for bad input."""

import json
import logging

import orjson
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, OperationalError
from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.renderers import BaseRenderer

from lab.errors import ApplicationError

logger = logging.getLogger(__name__)

# The answer to a database unavailable or too slow (503; decide/hot_path.py gives it too).
UNAVAILABLE_DETAIL = "the database is unavailable or too slow; retry"
RETRY_AFTER = "1"


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request, data, *, response_status):
        return dumps(data)


def dumps(data) -> bytes:
    """`data` as JSON. An integer beyond 64 bits (orjson's limit), which can come back from a
    stored JSON value written before Lab checked numbers (PostgreSQL's jsonb keeps any
    number exactly), is written exactly as stored rather than failing the whole answer."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return orjson.dumps(_big_integers_as_text(data), option=orjson.OPT_NON_STR_KEYS)


_INT64 = range(-(2**63), 2**64)


def _big_integers_as_text(value):
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {key: _big_integers_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_integers_as_text(item) for item in value]
    return value


class StrictJSONParser(Parser):
    """Parses bodies with orjson: faster, and it refuses NaN/Infinity literals outright."""

    def parse_body(self, request: HttpRequest):
        return parse_json_body(request)


def parse_json_body(request: HttpRequest, empty=None):
    """The request's JSON body, or `empty` when it has none.

    Refused: a body whose Content-Type is not JSON (415), a body that is not JSON, and an
    object with the same key twice (400: which of the two was meant is not ours to guess).
    """
    body = request.body
    if not body:
        return empty
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json), not {request.content_type!r}"
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc
    if isinstance(data, dict | list):
        # orjson keeps the last of two equal keys silently; the standard parser can say so.
        try:
            json.loads(body, object_pairs_hook=_refuse_duplicate_keys)
        except RecursionError:
            # orjson reads up to 1024 levels, the standard parser fewer (Python's recursion
            # limit): a body nested in between is refused here rather than answered 500.
            raise MalformedBody("the body nests arrays or objects too deeply") from None
    return data


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise MalformedBody(f"the body has the key {key!r} twice in one object")
        keys.add(key)
    return {}


class MalformedBody(ApplicationError):
    status_code = 400


class UnsupportedMediaType(ApplicationError):
    status_code = 415


def install_error_handlers(api: NinjaAPI) -> None:
    @api.exception_handler(ApplicationError)
    def application_error(request, exc: ApplicationError):
        return api.create_response(request, {"detail": exc.detail}, status=exc.status_code)

    @api.exception_handler(DjangoValidationError)
    def django_validation_error(request, exc: DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return api.create_response(request, {"detail": detail}, status=400)

    @api.exception_handler(RequestDataTooBig)
    def too_big(request, exc):
        return api.create_response(request, {"detail": "the request body is too large"}, status=413)

    @api.exception_handler(NinjaValidationError)
    def validation_error(request, exc: NinjaValidationError):
        return api.create_response(request, {"detail": _clean(exc.errors)}, status=422)

    @api.exception_handler(AuthenticationError)
    def unauthorized(request, exc):
        response = api.create_response(
            request, {"detail": "missing or invalid bearer credentials"}, status=401
        )
        response["WWW-Authenticate"] = "Bearer"
        return response

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        # ninja wraps any parser error in a bare "Cannot parse request body"; the parser's
        # own message says what is wrong, so pass it on.
        cause = exc.__cause__
        if isinstance(cause, ApplicationError):
            return application_error(request, cause)
        return api.create_response(request, {"detail": exc.message}, status=exc.status_code)

    @api.exception_handler(OperationalError)
    def database_unavailable(request, exc: OperationalError):
        logger.warning("database unavailable: %s", exc)
        response = api.create_response(request, {"detail": UNAVAILABLE_DETAIL}, status=503)
        response["Retry-After"] = RETRY_AFTER
        return response

    @api.exception_handler(DatabaseError)
    def database_error(request, exc: DatabaseError):
        logger.exception("database error")
        return api.create_response(request, {"detail": "database error"}, status=500)


def _clean(errors: list) -> list:
    """Pydantic errors carry the offending input; keep them JSON-safe and short."""
    cleaned = []
    for error in errors:
        item = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
        loc = list(item.get("loc", ()))
        if loc[:2] == ["body", "body"]:
            # ninja names the source and then the parameter, which is called `body` too.
            item["loc"] = ["body", *loc[2:]]
        cleaned.append(item)
    return cleaned
