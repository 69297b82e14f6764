"""The decide API: which variant of each running experiment a unit gets.

Mounted at the root by lab/urls.py, so every route spells its full path. Authenticated with a
product's client key (`Authorization: Bearer lck_...`); the key is checked in the same SQL
statement that reads the unit's assignments (decide.store). Answers are rendered straight to
JSON with orjson; the response schemas document them.
"""

import orjson
from django.db import DatabaseError
from django.http import HttpResponse
from ninja import NinjaAPI
from ninja.decorators import decorate_view
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from decide import decisions, ofrep, store
from decide.auth import ClientKeyAuth
from decide.metrics import observed
from decide.schemas import ERRORS, BatchIn, BatchOut, DecideIn, DecideOut, ErrorOut
from lab.errors import PayloadTooLarge
from lab.http import ORJSONRenderer, StrictJSONParser, install_error_handlers

api = NinjaAPI(
    title="Lab decide API",
    version="1",
    description=(
        "Which variant of each running experiment a unit gets. Authenticate with a product's "
        "client key: `Authorization: Bearer lck_...`. Also an OpenFeature (OFREP) provider "
        "endpoint under /ofrep/v1. See docs/decide.md."
    ),
    urls_namespace="decide",
    auth=ClientKeyAuth(),
    renderer=ORJSONRenderer(),
    parser=StrictJSONParser(),
    openapi_url="/api/v1/openapi.json",
    docs_url="/api/v1/docs",
)
install_error_handlers(api)


def _key_checked_first(handler):
    """Bad input from a caller whose key is bad answers 401, as if the input were fine.

    ninja validates the body after the (shape-only) auth check, before the view reads the
    database; this completes the key check for the requests refused at that stage.
    """

    def checked(request, exc):
        credential = getattr(request, "auth", None)
        if credential is not None:
            try:
                store.verify_key(credential)
            except AuthenticationError as auth_error:
                return api.on_exception(request, auth_error)
            except DatabaseError:
                pass  # cannot tell; the input error is still true
        return handler(request, exc)

    return checked


api.exception_handler(PayloadTooLarge)(
    _key_checked_first(
        lambda request, exc: api.create_response(request, {"detail": exc.detail}, status=413)
    )
)
# ninja answers a body it cannot parse with HttpError(400) and one it cannot validate with a
# ValidationError (422).
for _refused_before_the_view in (HttpError, NinjaValidationError):
    api.exception_handler(_refused_before_the_view)(
        _key_checked_first(api._exception_handlers[_refused_before_the_view])
    )


def _json(data) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), content_type="application/json")


@api.post(
    "/api/v1/decide",
    response={200: DecideOut, **ERRORS},
    tags=["decide"],
    summary="Decide the variants of one unit",
)
@decorate_view(observed("decide"))
def decide(request, body: DecideIn):
    """One entry per experiment asked for (or per enabled experiment of the product, at
    `step` if given): the unit's variant key, or null when it gets none (experiment paused
    or unknown, product disabled, unit outside coverage). A first decision is stored before
    the answer is sent; later ones return it unchanged."""
    decided = decisions.decide(
        request.auth, (body.unit,), experiments=body.experiments, step=body.step
    )
    answers = decided.answers[body.unit]
    return _json({"unit": body.unit, "variants": {k: a.variant for k, a in answers.items()}})


@api.post(
    "/api/v1/decide/batch",
    response={200: BatchOut, 413: ErrorOut, **ERRORS},
    tags=["decide"],
    summary="Decide the variants of up to 1000 units",
)
@decorate_view(observed("batch"))
def decide_batch(request, body: BatchIn):
    """Like /api/v1/decide for each unit, in request order, with a fixed number of database
    statements whatever the number of units. More than 1000 units answer 413."""
    unique_units = list(dict.fromkeys(body.units))
    decided = decisions.decide(
        request.auth, unique_units, experiments=body.experiments, step=body.step
    )
    by_unit = {
        unit: {"unit": unit, "variants": {k: a.variant for k, a in answers.items()}}
        for unit, answers in decided.answers.items()
    }
    return _json({"decisions": [by_unit[unit] for unit in body.units]})


api.add_router("", ofrep.router)
