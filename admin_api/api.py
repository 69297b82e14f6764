"""The admin API: operators and engineers manage products, experiments and data."""

from ninja import NinjaAPI

from admin_api.routers import (
    assignments,
    audit,
    client_keys,
    experiments,
    measurements,
    metrics,
    products,
    results,
    steps,
    units,
    variants,
)
from lab.auth import ApiTokenAuth
from lab.http import ORJSONRenderer, StrictJSONParser, install_error_handlers

api = NinjaAPI(
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
api.add_router(PRODUCT + "/client-keys", client_keys.router)
api.add_router(PRODUCT + "/steps", steps.router)
api.add_router(PRODUCT + "/metrics", metrics.router)
api.add_router(PRODUCT + "/experiments", experiments.router)
api.add_router(EXPERIMENT + "/variants", variants.router)
api.add_router(EXPERIMENT + "/assignments", assignments.router)
api.add_router(EXPERIMENT + "/results", results.router)
api.add_router(PRODUCT + "/units", units.router)
api.add_router(PRODUCT + "/measurements", measurements.router)
api.add_router(PRODUCT + "/audit", audit.router)
