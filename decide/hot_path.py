"""Known-unit decide answered in front of Django, from the worker's memory or the database.

`POST /api/v1/decide` for a unit whose decision is a read (decide.memory.policy: every answer a
stored assignment or a null the config alone decides) is answered by this WSGI callable, which
wraps Django's, with what the whole stack would answer: the same body, status and headers
(security headers, `Vary`, `Content-Length`, `X-Request-ID`), the same Host check, metrics and
access log line. The decision comes from the worker's memory of known units, or else from the
one read `decide` makes (decide.store.read_units), remembered as `decide` remembers it. It
reuses the pieces the stack is made of — Django's request object for the Host and the body,
the JSON parser of lab.http, the `DecideIn` schema, decide.auth's `ClientKeyAuth`,
decide.decisions for the answer — and skips only their plumbing: the middleware chain, URL
resolution, ninja's parameter models and rendering (two thirds of a known unit's CPU time,
load_tests/RESULTS.md).

Everything else goes to Django unchanged, its body handed back as it was read: a decision that
would store something or tests a condition, a key the database refuses (Django gives the
401), any database error (Django gives its 503), a body or key that is not plainly good
(Django gives the 4xx), a request with an `Origin` (CORS), a Host not allowed, a plain-HTTP
request when SECURE_SSL_REDIRECT is on. So it can answer less than Django, never otherwise.
A unit that needs a write is read twice (here, then by Django): the price of leaving every
write to Django.
It mirrors the middleware list of lab/settings.py (MIRRORED_MIDDLEWARE) and stays off under any
other, and with DECIDE_HOT_PATH=false. See docs/decide.md, "The hot path".
"""

from __future__ import annotations

import io
import logging
import time

import orjson
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.handlers.wsgi import WSGIRequest
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from pydantic import ValidationError

from decide import decisions, metrics
from decide.auth import ClientKeyAuth, InvalidClientKey
from decide.schemas import DecideIn
from lab.errors import ApplicationError
from lab.http import parse_json_body
from lab.logging import request_id_var
from lab.middleware import log_access, request_id_of

logger = logging.getLogger(__name__)

PATH = "/api/v1/decide"
# A decide body is a unit key, a few experiment keys and attributes: larger ones go to Django.
MAX_BODY_BYTES = 16 * 1024
# The stack whose answers this reproduces (lab/settings.py). Under any other list a new
# middleware could have its say, so everything goes to Django.
MIRRORED_MIDDLEWARE = (
    "lab.middleware.RequestIdMiddleware",
    "lab.middleware.HttpContractMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
# decide's own reading of the credential (ninja's HttpBearer, then decide.auth).
_client_key = ClientKeyAuth()


class DecideHotPath:
    """WSGI: known-unit decisions that are reads; every other request to `application`."""

    def __init__(self, application):
        self.application = application
        self.enabled = settings.DECIDE_HOT_PATH and tuple(settings.MIDDLEWARE) == (
            MIRRORED_MIDDLEWARE
        )
        if settings.DECIDE_HOT_PATH and not self.enabled:
            logger.warning("decide hot path off: MIDDLEWARE is not the one it mirrors")
        self.max_body = min(MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or MAX_BODY_BYTES)
        # The headers the middleware adds to a decide answer, for a plain and a secure request.
        self._headers = {secure: _middleware_headers(secure) for secure in (False, True)}

    def __call__(self, environ, start_response):
        if (
            self.enabled
            and environ.get("PATH_INFO") == PATH
            and environ.get("REQUEST_METHOD") == "POST"
            and "HTTP_ORIGIN" not in environ
        ):
            try:
                answered = self._answer(environ)
            except Exception:
                # A defect here must not cost the caller an answer: Django gives it.
                logger.exception("decide hot path failed; the request goes to Django")
                answered = None
            if answered is not None:
                headers, body = answered
                start_response("200 OK", headers)
                return [body]
        return self.application(environ, start_response)

    def _answer(self, environ) -> tuple[list[tuple[str, str]], bytes] | None:
        """The answer from memory or the one read, or None for Django to answer."""
        started = time.perf_counter()
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or not 0 < int(length) <= self.max_body:
            return None
        if "HTTP_AUTHORIZATION" not in environ:
            return None
        request = WSGIRequest(environ)
        credential = _client_key(request)
        if credential is None:
            return None
        try:
            request.get_host()
        except DisallowedHost:
            return None
        secure = request.is_secure()
        if settings.SECURE_SSL_REDIRECT and not secure:
            return None
        try:
            body = request.body
        except RequestDataTooBig:
            return None
        # Whoever answers next reads the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            payload = DecideIn.model_validate(parse_json_body(request))
        except (ApplicationError, ValidationError):
            return None

        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        token = request_id_var.set(request_id)
        # What Django does with its connections around a request (request_started and
        # request_finished): one left broken or past CONN_MAX_AGE is closed, not reused.
        close_old_connections()
        try:
            try:
                decided = decisions.decide_if_read(
                    credential,
                    payload.unit,
                    experiments=payload.experiments,
                    step=payload.step,
                    attributes={payload.unit: payload.attributes} if payload.attributes else None,
                )
            except (InvalidClientKey, DatabaseError):
                return None  # Django answers it: 401, or 503 and Retry-After
            if decided is None:
                return None
            answers = decided.answers[payload.unit]
            content = orjson.dumps(
                {"unit": payload.unit, "variants": {k: a.variant for k, a in answers.items()}}
            )
            metrics.record("decide", 200, started)
            log_access("POST", request.path, 200, started)
        finally:
            request_id_var.reset(token)
            close_old_connections()
        headers = [
            *self._headers[secure],
            ("Content-Length", str(len(content))),
            ("X-Request-ID", request_id),
        ]
        return headers, content


def _middleware_headers(secure: bool) -> list[tuple[str, str]]:
    """What the response side of MIRRORED_MIDDLEWARE adds to a decide answer before
    Content-Length and X-Request-ID, found by running it: SecurityMiddleware, then
    CorsMiddleware (for a request without an Origin: its Vary)."""
    request = HttpRequest()
    request.method = "POST"
    request.path = request.path_info = PATH
    request.is_secure = lambda: secure
    response = HttpResponse(content_type="application/json")
    SecurityMiddleware(lambda _: response).process_response(request, response)
    CorsMiddleware(lambda _: response).add_response_headers(request, response)
    return list(response.items())
