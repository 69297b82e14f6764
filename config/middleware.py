import logging
import re
import time
import uuid

from django.core.exceptions import DisallowedHost
from django.http import JsonResponse

from config.logging import request_id_var

access_log = logging.getLogger("lab.access")

# A caller may pass its own id to correlate logs; anything else gets a fresh one.
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(supplied: str) -> str:
    """The id of a request: the caller's X-Request-ID if it is one, else a fresh one."""
    return supplied if _CALLER_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex


def log_access(method: str, path: str, status: int, started: float) -> None:
    """The access log line of one request (`started`: its time.perf_counter())."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request",
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )


class RequestIdMiddleware:
    """Give each request an id (X-Request-ID in and out) and write one access log line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_of(request.headers.get("X-Request-ID", ""))
        request.request_id = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            log_access(request.method, request.path, response.status_code, started)
            return response
        finally:
            request_id_var.reset(token)


class HttpContractMiddleware:
    """What every route answers the same way, before and after the route itself:

    - a Host header that is not in ALLOWED_HOSTS is a 400 (Django checks it only when
      something asks for the host, which nothing in Lab's APIs does);
    - a 405 from any route is JSON like every other error, and keeps its `Allow` header;
    - a response that is not streamed carries its Content-Length, so that the WSGI server
      sends it as it is (two writes) instead of in chunks (three), and a client on a kept-alive
      connection knows where it ends.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            request.get_host()
        except DisallowedHost:
            refused = JsonResponse(
                {"detail": "the Host header names a host this server does not serve"}, status=400
            )
            refused["Content-Length"] = str(len(refused.content))
            return refused
        response = self.get_response(request)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            allowed = response.get("Allow", "")
            detail = f"method {request.method} is not allowed here"
            if allowed:
                detail += f"; allowed: {allowed}"
            replacement = JsonResponse({"detail": detail}, status=405)
            if allowed:
                replacement["Allow"] = allowed
            response = replacement
        if not response.streaming and "Content-Length" not in response:
            response["Content-Length"] = str(len(response.content))
        return response
