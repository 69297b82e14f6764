"""The decide API: which variant of each running experiment a unit gets.

Mounted at the root by config/urls.py, so every route spells its full path. Authenticated with a
product's client key (`Authorization: Bearer lck_...`); the key is checked in the same SQL
statement that reads the unit's assignments (decide.store), and every way it can fail is an
`InvalidClientKey`, answered 401 here. Answers are rendered straight to JSON with orjson; the
response schemas document them.
"""

import orjson
from django.db import DatabaseError
from django.http import HttpResponse
from ninja import NinjaAPI
from ninja.decorators import decorate_view
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from config.http import ORJSONRenderer, StrictJSONParser, install_error_handlers
from decide import decisions, ofrep, store
from decide.auth import ClientCredential, ClientKeyAuth, InvalidClientKey
from decide.metrics import observed
from decide.schemas import ERRORS, BatchIn, BatchOut, DecideIn, DecideOut, ErrorOut
from lab.errors import PayloadTooLarge

# Refusals that can happen before a request's key is checked against the database: ninja's
# parse (400) and validation (422) errors, an oversized batch (413), OFREP's own refusals
# (but not ninja's AuthenticationError, an HttpError too: that is the 401 itself).
REFUSED_BEFORE_KEY_CHECK = (HttpError, NinjaValidationError, PayloadTooLarge, ofrep.OfrepError)


class DecideAPI(NinjaAPI):
    """The decide API's one rule about errors: a bad client key answers 401 first.

    A well-formed credential is only checked against the database by the statement that
    reads the unit's assignments. A request refused before that (its body is bad) gets its
    key checked here, so a bad key with a bad body answers 401, never 400/413/422.
    """

    def on_exception(self, request, exc: Exception):
        if isinstance(exc, REFUSED_BEFORE_KEY_CHECK) and not isinstance(exc, AuthenticationError):
            credential = getattr(request, "auth", None)
            if isinstance(credential, ClientCredential):
                try:
                    store.check_client_key(credential)
                except InvalidClientKey as invalid:
                    exc = invalid
                except DatabaseError:
                    pass  # cannot tell; the input error is still true
        return super().on_exception(request, exc)


api = DecideAPI(
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


@api.exception_handler(InvalidClientKey)
def invalid_client_key(request, exc: InvalidClientKey):
    """401, exactly as for a missing or malformed credential."""
    return api.on_exception(request, AuthenticationError())


@api.exception_handler(ofrep.OfrepError)
def ofrep_error(request, exc: ofrep.OfrepError):
    return _json(exc.body, exc.status)


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), content_type="application/json", status=status)


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
        request.auth,
        (body.unit,),
        experiments=body.experiments,
        step=body.step,
        attributes={body.unit: body.attributes} if body.attributes else None,
        handed=request.META.pop(decisions.HANDED_ENVIRON_KEY, None),
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
    keys = [unit if isinstance(unit, str) else unit.key for unit in body.units]
    sent: dict[str, dict] = {}
    for unit in body.units:
        if not isinstance(unit, str) and unit.attributes and unit.key not in sent:
            sent[unit.key] = unit.attributes
    decided = decisions.decide(
        request.auth,
        list(dict.fromkeys(keys)),
        experiments=body.experiments,
        step=body.step,
        attributes=sent or None,
    )
    by_unit = {
        unit: {"unit": unit, "variants": {k: a.variant for k, a in answers.items()}}
        for unit, answers in decided.answers.items()
    }
    return _json({"decisions": [by_unit[key] for key in keys]})


api.add_router("", ofrep.router)
