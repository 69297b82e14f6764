"""The decide API (placeholder until the hot path lands)."""

from ninja import NinjaAPI

from lab.http import ORJSONRenderer, StrictJSONParser, install_error_handlers

api = NinjaAPI(
    title="Lab decide API",
    version="1",
    urls_namespace="decide",
    renderer=ORJSONRenderer(),
    parser=StrictJSONParser(),
    openapi_url="/api/v1/openapi.json",
    docs_url="/api/v1/docs",
)
install_error_handlers(api)
