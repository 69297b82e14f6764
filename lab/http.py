"""What every Lab API shares: errors as `{"detail": ...}`, fast JSON, no 500 for bad input."""

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


class ORJSONRenderer(BaseRenderer):
    media_type = "application/json"

    def render(self, request, data, *, response_status):
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


class StrictJSONParser(Parser):
    """Parses bodies with orjson: faster, and it refuses NaN/Infinity literals outright."""

    def parse_body(self, request: HttpRequest):
        try:
            return orjson.loads(request.body or b"null")
        except orjson.JSONDecodeError as exc:
            raise MalformedBody(f"the body is not valid JSON: {exc}") from exc


class MalformedBody(ApplicationError):
    status_code = 400


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
        detail = cause.detail if isinstance(cause, MalformedBody) else exc.message
        return api.create_response(request, {"detail": detail}, status=exc.status_code)

    @api.exception_handler(OperationalError)
    def database_unavailable(request, exc: OperationalError):
        logger.warning("database unavailable: %s", exc)
        response = api.create_response(
            request, {"detail": "the database is unavailable or too slow; retry"}, status=503
        )
        response["Retry-After"] = "1"
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
        cleaned.append(item)
    return cleaned
