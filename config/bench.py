"""A no-op django-ninja endpoint: the ceiling the decide benchmark is compared against.

Mounted only when LAB_BENCHMARK_ENDPOINTS is on (never in the public URL space by default).
It goes through the same middleware, renderer, parser and a bearer-auth check as decide,
but touches neither the database nor the cache.
"""

from ninja import NinjaAPI, Schema
from ninja.security import HttpBearer

from config.http import ORJSONRenderer, StrictJSONParser, install_error_handlers


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
