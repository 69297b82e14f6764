"""Request-scoped log context: every log line carries the id of the request it belongs to."""

import contextvars
import logging

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is None:
            # Django logs 4xx/5xx responses (django.request) after the middleware has
            # returned; those records carry the request itself.
            request_id = getattr(getattr(record, "request", None), "request_id", None)
        record.request_id = request_id
        return True
