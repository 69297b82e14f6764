"""The admin API: operators and engineers manage products, experiments and data."""

from ninja import NinjaAPI

from admin_api.routers import (
    analysis,
    assignments,
    audit,
    client_keys,
    designs,
    experiments,
    layers,
    measurements,
    metrics,
    plots,
    products,
    results,
    steps,
    tokens,
    units,
    variants,
)
from admin_api.schemas import comma_separated_query_lists
from config.http import ORJSONRenderer, StrictJSONParser, install_error_handlers
from lab.auth import ApiTokenAuth

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"description": "What is wrong: a message, or a list of field errors."}
    },
    "required": ["detail"],
}
ERROR_STATUSES = {
    "400": "Bad input: the body is not JSON, or breaks a rule of the stored data",
    "401": "Missing or invalid bearer token",
    "404": "No such object, or it belongs to another tenant",
    "409": "Duplicate key, or a rule on another object (one control per experiment)",
    "413": "The batch or body is too large",
    "422": "The request does not match the schema",
    "503": "The database is unavailable or too slow; retry",
}


class AdminAPI(NinjaAPI):
    """Documents the `{"detail": ...}` error answers every admin operation may give, so that
    generated clients know them (ninja only documents the success responses declared)."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        comma_separated_query_lists(schema)
        schema["components"].setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        reference = {"$ref": "#/components/schemas/Error"}
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in ERROR_STATUSES.items():
                    responses.setdefault(
                        status,
                        {
                            "description": description,
                            "content": {"application/json": {"schema": reference}},
                        },
                    )
        return schema


api = AdminAPI(
    title="Lab admin API",
    version="1",
    description=(
        "Manage products, experiments, variants, units, assignments and measurements. "
        "Authenticate with `Authorization: Bearer <api token>` "
        "(`python manage.py create_api_token USERNAME`)."
    ),
    urls_namespace="admin",
    auth=ApiTokenAuth(),
    renderer=ORJSONRenderer(),
    parser=StrictJSONParser(),
    openapi_url="/openapi.json",
    docs_url="/docs",
)
install_error_handlers(api)

PRODUCT = "/products/{product}"
EXPERIMENT = PRODUCT + "/experiments/{experiment}"

api.add_router("/products", products.router)
api.add_router("/tokens", tokens.router)
api.add_router("/plots", plots.router)
api.add_router(PRODUCT + "/client-keys", client_keys.router)
api.add_router(PRODUCT + "/steps", steps.router)
api.add_router(PRODUCT + "/metrics", metrics.router)
api.add_router(PRODUCT + "/layers", layers.router)
api.add_router(PRODUCT + "/designs", designs.router)
api.add_router(PRODUCT + "/experiments", experiments.router)
api.add_router(EXPERIMENT + "/variants", variants.router)
api.add_router(EXPERIMENT + "/assignments", assignments.router)
api.add_router(EXPERIMENT + "/results", results.router)
api.add_router(PRODUCT + "/units", units.router)
api.add_router(PRODUCT + "/measurements", measurements.router)
api.add_router(PRODUCT + "/audit", audit.router)
api.add_router(PRODUCT, analysis.router)
