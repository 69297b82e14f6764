"""Decide answered in front of Django, from the worker's memory or the database.

`POST /api/v1/decide` for a unit whose decision is a read (decide.memory.policy: every answer a
stored assignment or a null the config alone decides) is answered by this WSGI callable, which
wraps Django's, with what the whole stack would answer: the same body, status and headers
(security headers, `Vary`, `Content-Length`, `X-Request-ID`), the same Host check, metrics and
access log line. The decision comes from the worker's memory of known units, or else from the
one read `decide` makes (decide.store.read_units), remembered as `decide` remembers it. It
reuses the pieces the stack is made of — Django's request object for the Host and the body,
the JSON parser of config.http, the `DecideIn` schema's fields (validated once,
decide.schemas.DecideInBody), decide.auth's reading of the client key from the environ,
decide.decisions for the answer — and skips only their plumbing: the middleware chain, URL
resolution, ninja's parameter models and rendering (where most of a known unit's CPU time
went, as the profiles in load_tests/RESULTS.md show).

The same request again (byte for byte: key, Host, scheme, Content-Type, body) is answered
from the answer kept with the memory entries it was made from, while they are still the ones
held and memory is fresh (decide.memory.entries.Answer): nothing of it is parsed or planned
again.

A decision that stores (a first one, a condition, a rebucketing) is made here too, by
decide.decisions.decide from what the read returned, as the view calls it.

A database unavailable or too slow (an OperationalError: a statement timeout, a lost
connection) is answered here as Django answers it: 503, `Retry-After`, the same body, metrics
and log lines, without asking the database a second time. A store that fails otherwise goes
to Django from the start (it reads again; a stored first assignment is read back).

Everything else goes to Django unchanged, its body handed back as it was read: a key the
database refuses (Django gives the 401), another database error on the read (Django gives its
500), a body or key that is not plainly good
(Django gives the 4xx), a request with an `Origin` (CORS), a Host not allowed, a plain-HTTP
request when SECURE_SSL_REDIRECT is on. So it can answer less than Django, never otherwise.
What was read for a decision handed on goes with it (decide.decisions.Handed, in the WSGI
environ): Django answers the read's error without reading the unit again.
It mirrors the middleware list of config/settings.py (MIRRORED_MIDDLEWARE) and stays off under any
other, and with DECIDE_HOT_PATH=false. See docs/decide.md, "The hot path".
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time

import orjson
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.handlers.wsgi import WSGIRequest
from django.db import OperationalError, close_old_connections
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.utils.log import log_response
from pydantic import ValidationError

from config.http import RETRY_AFTER, UNAVAILABLE_DETAIL, ORJSONRenderer, parse_json_body
from config.http import logger as logger_http
from config.logging import request_id_var
from config.middleware import log_access, request_id_of
from decide import decisions, memory, metrics, ofrep
from decide.auth import api_key_credential, bearer_credential
from decide.memory.entries import Answer, answer_size
from decide.schemas import DecideInBody
from lab.errors import ApplicationError
from rules.keys import is_valid_key
from rules.vocabulary import Reason

logger = logging.getLogger(__name__)

PATH = "/api/v1/decide"
# A decide body is a unit key, a few experiment keys and attributes: larger ones go to Django.
MAX_BODY_BYTES = 16 * 1024
# The stack whose answers this reproduces (config/settings.py). Under any other list a new
# middleware could have its say, so everything goes to Django.
MIRRORED_MIDDLEWARE = (
    "config.middleware.RequestIdMiddleware",
    "config.middleware.HttpContractMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
# OFREP's single-flag evaluation: this prefix and the flag's key (ninja's `{key}`: no slash).
OFREP_FLAG_PREFIX = "/ofrep/v1/evaluate/flags/"

_STATUS_LINES = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}
# config.http's answer to a database unavailable or too slow (its OperationalError handler).
UNAVAILABLE_BODY = orjson.dumps({"detail": UNAVAILABLE_DETAIL})
# What an answer depends on besides the body, the path and the client key: the Host check
# and is_secure() (Django's get_host, and the security headers), the Content-Type check.
_ANSWER_ENVIRON = (
    "SCRIPT_NAME",
    "CONTENT_TYPE",
    "HTTP_HOST",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "SERVER_NAME",
    "SERVER_PORT",
    "wsgi.url_scheme",
)
# The key of the digest a kept answer is found by (decide.memory.entries.Answer): the
# request's key is in what is digested, so the digest is keyed, and this one never leaves
# the process tree.
_DIGEST_KEY = os.urandom(32)


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
        proxy_ssl = settings.SECURE_PROXY_SSL_HEADER
        self._answer_environ = _ANSWER_ENVIRON + ((proxy_ssl[0],) if proxy_ssl else ())
        # The headers the middleware adds to an answer, per endpoint, for a plain and a
        # secure request.
        self._headers = {
            (path, secure, status): _middleware_headers(path, secure, status)
            for path in (PATH, OFREP_FLAG_PREFIX + "flag")
            for secure in (False, True)
            for status in (200, 404, 503)
        }

    def __call__(self, environ, start_response):
        if (
            self.enabled
            and environ.get("REQUEST_METHOD") == "POST"
            and "HTTP_ORIGIN" not in environ
        ):
            path = environ.get("PATH_INFO", "")
            if path == PATH:
                answer = self._decide
            elif path.startswith(OFREP_FLAG_PREFIX):
                answer = self._ofrep_flag
            else:
                answer = None
            if answer is not None:
                try:
                    answered = answer(environ)
                except Exception:
                    # A defect here must not cost the caller an answer: Django gives it.
                    logger.exception("decide hot path failed; the request goes to Django")
                    answered = None
                if answered is not None:
                    status, headers, body = answered
                    start_response(_STATUS_LINES[status], headers)
                    return [body]
        return self.application(environ, start_response)

    def _read(self, environ, *, ofrep: bool) -> bytes | None:
        """The body, when its length and the presence of a key make it a candidate."""
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or not 0 < int(length) <= self.max_body:
            return None
        if "HTTP_AUTHORIZATION" not in environ and not (ofrep and "HTTP_X_API_KEY" in environ):
            return None
        body = environ["wsgi.input"].read(int(length))
        # Whoever answers next reads the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        return body

    def _digest(self, environ, body: bytes) -> bytes:
        """What a kept answer is found by: a keyed digest of everything the answer depends
        on — path, client key, Host, scheme, Content-Type and body — each length-prefixed."""
        parts = [
            environ.get("PATH_INFO", ""),
            environ.get("HTTP_AUTHORIZATION", ""),
            environ.get("HTTP_X_API_KEY", ""),
            *(str(environ.get(name, "")) for name in self._answer_environ),
        ]
        head = "".join(f"{len(part)}:{part}" for part in parts)
        digest = hashlib.blake2b(key=_DIGEST_KEY, digest_size=16)
        digest.update(head.encode("utf-8", "surrogatepass"))
        digest.update(body)
        return digest.digest()

    def _request(self, environ, *, ofrep: bool):
        """Django's request and the credential, when plainly good, else None."""
        # decide's reading of the credential (decide.auth.ClientKeyAuth); OFREP also takes
        # X-API-Key, tried second as its router does.
        credential = bearer_credential(environ)
        if credential is None and ofrep:
            credential = api_key_credential(environ)
        if credential is None:
            return None
        request = WSGIRequest(environ)
        try:
            request.get_host()
        except DisallowedHost:
            return None
        if settings.SECURE_SSL_REDIRECT and not request.is_secure():
            return None
        try:
            body = request.body
        except RequestDataTooBig:
            return None
        # Whoever answers next reads the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        return request, credential

    def _answer_kept(self, environ, body: bytes, endpoint: str, started: float):
        """The answer kept for this very request (decide.memory.entries.Answer) if memory
        still answers it so, with its metrics and log line; else (None, digest)."""
        known = memory.known_units()
        if known is None:
            return None, None
        digest = self._digest(environ, body)
        kept = known.answer(digest)
        if kept is None:
            return None, digest
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        token = request_id_var.set(request_id)
        try:
            metrics.known_hit.inc()
            metrics.record(endpoint, kept.status, started)
            log_access("POST", kept.path, kept.status, started)
        finally:
            request_id_var.reset(token)
        headers = [*kept.headers, ("X-Request-ID", request_id)]
        return (kept.status, headers, kept.content), digest

    def _decide(self, environ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """`POST /api/v1/decide` from memory or the one read, or None for Django."""
        started = time.perf_counter()
        body = self._read(environ, ofrep=False)
        if body is None:
            return None
        kept, digest = self._answer_kept(environ, body, "decide", started)
        if kept is not None:
            return kept
        prepared = self._request(environ, ofrep=False)
        if prepared is None:
            return None
        request, credential = prepared
        try:
            payload = DecideInBody.model_validate(parse_json_body(request))
        except (ApplicationError, ValidationError):
            return None

        def answer(decided: decisions.Decided) -> tuple[int, dict]:
            answers = decided.answers[payload.unit]
            variants = {k: a.variant for k, a in answers.items()}
            return 200, {"unit": payload.unit, "variants": variants}

        return self._respond(
            environ,
            request,
            credential,
            started,
            endpoint="decide",
            unit=payload.unit,
            experiments=payload.experiments,
            step=payload.step,
            attributes={payload.unit: payload.attributes} if payload.attributes else None,
            answer=answer,
            digest=digest,
        )

    def _ofrep_flag(self, environ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """`POST /ofrep/v1/evaluate/flags/{key}` as decide.ofrep.evaluate_flag answers it, or
        None for Django."""
        started = time.perf_counter()
        flag = environ["PATH_INFO"][len(OFREP_FLAG_PREFIX) :]
        if "/" in flag or not is_valid_key(flag):
            return None
        body = self._read(environ, ofrep=True)
        if body is None:
            return None
        kept, digest = self._answer_kept(environ, body, "ofrep", started)
        if kept is not None:
            return kept
        prepared = self._request(environ, ofrep=True)
        if prepared is None:
            return None
        request, credential = prepared
        try:
            unit, attributes = ofrep.targeting_key(request, flag)
        except ofrep.OfrepError:
            return None

        def answer(decided: decisions.Decided) -> tuple[int, dict]:
            evaluated = decided.answers[unit][flag]
            if evaluated.reason == Reason.UNKNOWN:
                return 404, ofrep.flag_not_found(flag)
            return 200, ofrep.evaluation(flag, evaluated)

        return self._respond(
            environ,
            request,
            credential,
            started,
            endpoint="ofrep",
            unit=unit,
            experiments=(flag,),
            step=None,
            attributes={unit: attributes},
            answer=answer,
            digest=digest,
        )

    def _respond(
        self,
        environ,
        request,
        credential,
        started: float,
        *,
        endpoint: str,
        unit: str,
        experiments,
        step,
        attributes,
        answer,
        digest: bytes | None,
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        token = request_id_var.set(request_id)
        # What Django does with its connections around a request (request_started and
        # request_finished): one left broken or past CONN_MAX_AGE is closed, not reused.
        close_old_connections()
        unavailable = None
        try:
            decided = decisions.decide_if_read(
                credential, unit, experiments=experiments, step=step, attributes=attributes
            )
            storing = isinstance(decided, decisions.Handed) and decided.error is None
            if storing:
                # A decision that stores (a first one, a condition, a rebucketing): made
                # here as the view makes it, from what was read.
                decided = _decide_and_store(
                    decided, unit, experiments=experiments, step=step, attributes=attributes
                )
                if decided is None:
                    return None
            if isinstance(decided, decisions.Handed):
                if not isinstance(decided.error, OperationalError):
                    # Django answers it from what was read: a 401, a 500.
                    environ[decisions.HANDED_ENVIRON_KEY] = decided
                    return None
                # The database is unavailable or too slow: Django's 503, without asking
                # it again (a second statement timeout).
                if not storing and memory.known_units() is not None:
                    metrics.known_miss.inc()  # (`decide` counted it for a decision that stores)
                unavailable = decided.error
                status, content = 503, UNAVAILABLE_BODY
                logger_http.warning("database unavailable: %s", unavailable)
            else:
                status, data = answer(decided)
                content = orjson.dumps(data)
            metrics.record(endpoint, status, started)
            log_access("POST", request.path, status, started)
        finally:
            request_id_var.reset(token)
            close_old_connections()
        path = PATH if endpoint == "decide" else OFREP_FLAG_PREFIX + "flag"
        headers = [
            *self._headers[path, request.is_secure(), status],
            ("Content-Length", str(len(content))),
        ]
        if unavailable is None and digest is not None and _keepable(decided):
            # Answered from memory: the same request is answered again from this answer
            # while memory still holds what it was made from (decide.memory.entries.Answer).
            remembered = decided.remembered
            key_entry, unit_entry = remembered.key_entry, remembered.unit_entry
            memory.known_units().put_answer(
                digest,
                Answer(
                    prefix=credential.prefix,
                    key=key_entry,
                    where=(key_entry.state.product_id, unit),
                    unit=unit_entry,
                    status=status,
                    headers=tuple(headers),
                    content=content,
                    path=request.path,
                    size=answer_size(content),
                ),
            )
        headers.append(("X-Request-ID", request_id))
        if unavailable is not None:
            # What Django logs of a 5xx after its middleware (django.request).
            response = HttpResponse(content, status=status)
            request.request_id = request_id
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return status, headers, content


def _keepable(decided) -> bool:
    """Whether an answer can be kept for the same request (decide.memory.entries.Answer):
    one made from memory's entries, by no experiment with a schedule (whose answer changes
    with the time, not with anything memory is told)."""
    if not isinstance(decided, decisions.Decided) or decided.remembered is None:
        return False
    remembered = decided.remembered
    if remembered.key_entry is None or remembered.unit_entry is None:
        return False
    by_key = decided.config.by_key
    for answers in decided.answers.values():
        for experiment_key in answers:
            experiment = by_key.get(experiment_key)
            if experiment is not None and experiment.schedule is not None:
                return False
    return True


def _decide_and_store(
    handed: decisions.Handed, unit: str, *, experiments, step, attributes
) -> decisions.Decided | decisions.Handed | None:
    """`decisions.decide` as the view calls it, with the read handed over. A database
    unavailable or too slow comes back as a Handed with its error (the 503 answered here);
    any other failure returns None, and Django decides the request again from the start
    (the store is idempotent: what this attempt stored is read back as the answer)."""
    try:
        return decisions.decide(
            handed.credential,
            (unit,),
            experiments=experiments,
            step=step,
            attributes=attributes,
            handed=handed,
        )
    except OperationalError as error:
        return handed._replace(error=error)
    except Exception as error:
        # Django, deciding it again, logs a defect's traceback with its 500 if it meets it too.
        logger.warning(
            "decide hot path: a decision that stores failed (%r); Django decides it again", error
        )
        return None


def _middleware_headers(path: str, secure: bool, status: int) -> list[tuple[str, str]]:
    """The headers of an answer with `status` at `path` before Content-Length and
    X-Request-ID: the view's (decide.api, decide.ofrep; config.http's for a 503), then what the
    response side of MIRRORED_MIDDLEWARE adds, found by running it: SecurityMiddleware, then
    CorsMiddleware (for a request without an Origin: its Vary)."""
    request = HttpRequest()
    request.method = "POST"
    request.path = request.path_info = path
    request.is_secure = lambda: secure
    if status == 503:
        # ninja's create_response (config.http's handler of OperationalError)
        response = HttpResponse(
            content_type=f"{ORJSONRenderer.media_type}; charset={ORJSONRenderer.charset}"
        )
        response["Retry-After"] = RETRY_AFTER
    else:
        response = HttpResponse(content_type="application/json")
    SecurityMiddleware(lambda _: response).process_response(request, response)
    CorsMiddleware(lambda _: response).add_response_headers(request, response)
    return list(response.items())
