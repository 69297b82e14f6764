"""What the decide benchmark compares decide against, mounted only when
LAB_BENCHMARK_ENDPOINTS is on (never in the public URL space by default):

- `POST /bench/noop`, a no-op django-ninja endpoint: the same middleware, renderer, parser
  and a bearer-auth check as decide's view, but neither the database nor the cache;
- `POST /bench/floor`, the front's floor: a constant answer given by a WSGI callable in front
  of everything else of Lab (`FrontFloor`), so what it costs is nginx, gunicorn and the
  request's bytes: no decide path through the same front can be faster;
- `POST /bench/floor-read`, the floor with one database round trip: the same constant,
  answered after one prepared statement (`SELECT CAST($1 AS INTEGER)`) on the cursor
  decide's hot path reads with (decide.store), so what it costs is the front and a round trip
  to PostgreSQL: no decision that reads the database (a unit no worker's memory holds) can be
  faster.
"""

import orjson
from ninja import NinjaAPI, Schema
from ninja.security import HttpBearer

from config.http import ORJSONRenderer, StrictJSONParser, install_error_handlers
from decide.store import _rows as hot_path_rows


class AnyBearer(HttpBearer):
    def authenticate(self, request, token: str):
        return token or None


class NoopIn(Schema):
    unit: str


api = NinjaAPI(
    title="Lab benchmark ceiling",
    urls_namespace="bench",
    renderer=ORJSONRenderer(),
    parser=StrictJSONParser(),
    auth=AnyBearer(),
    docs_url=None,
    openapi_url=None,
)
install_error_handlers(api)


@api.post("/noop")
def noop(request, body: NoopIn):
    return {"unit": body.unit, "variants": {}}


FLOOR_PATH = "/bench/floor"
FLOOR_READ_PATH = "/bench/floor-read"
# One round trip, the least a decision that reads the database sends: a prepared statement
# with a parameter (the body's length: any body is a good one) on decide's hot-path cursor,
# its answer read and dropped.
FLOOR_READ_SQL = "SELECT CAST(%s AS INTEGER)"
# The size of a known unit's answer (three experiments), so the bytes on the wire match.
FLOOR_BODY = orjson.dumps(
    {"unit": "bench-000000000", "variants": {"exp-a": "a1", "exp-b": "b1", "exp-c": "c1"}}
)
_FLOOR_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(FLOOR_BODY))),
]


class FrontFloor:
    """WSGI: `POST /bench/floor` read and answered with FLOOR_BODY, `POST /bench/floor-read`
    the same after one round trip to the database; everything else to `application`."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path in (FLOOR_PATH, FLOOR_READ_PATH) and environ.get("REQUEST_METHOD") == "POST":
            length = environ.get("CONTENT_LENGTH") or ""
            body = environ["wsgi.input"].read(int(length)) if length.isdigit() else b""
            if path == FLOOR_READ_PATH:
                hot_path_rows(FLOOR_READ_SQL, [len(body)])
            start_response("200 OK", list(_FLOOR_HEADERS))
            return [FLOOR_BODY]
        return self.application(environ, start_response)
