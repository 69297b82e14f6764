"""Contract fuzzing: both OpenAPI schemas against the application, with schemathesis.

For every operation of the admin API (/api/admin/v1/openapi.json) and of the decide API
(/api/v1/openapi.json), schemathesis generates requests from the schema, valid ones
(positive mode) and ones the schema forbids (negative mode), and runs every check it has on
every answer: no 5xx, a status, content type, headers and body the schema documents for it,
a valid request accepted (`positive_data_acceptance`) and an invalid one refused
(`negative_data_rejection`). So whatever the documents allow, Lab accepts, and what they
forbid, Lab refuses: a generated client or a validator agrees with the server.

JSON Schema cannot say everything. A valid request may still be refused for a rule between
its fields (lower_limit <= nominal <= upper_limit) or one on stored data (a step that must
exist): those refusals are EXCUSED below, each by operation, status and detail, with its
reason. Anything else failing is a defect of the schema or of the server.

Requests go through the WSGI application in-process, authenticated (an admin token, a
client key). A seeded product "widget" with step "etch", metric "thickness", experiment
"exp" (variants "a" and "b"), unit "SN-1" and a client key is what the generated path
parameters name most of the time (schemathesis cannot guess keys); the rest of the time
they are generated, which exercises the 404s. Bounded and derandomized: MAX_EXAMPLES per
operation and mode, the same cases on every run.
"""

import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData

from lab.services.assignments import assignment_force
from lab.services.credentials import api_token_create, client_key_create
from lab.services.experiments import experiment_create
from lab.services.measurements import MeasurementRow, measurements_record
from lab.services.metrics import metric_create
from lab.services.products import product_create
from lab.services.steps import step_create

MAX_EXAMPLES = 10
# How often a path parameter names the seeded object rather than a generated string.
SEEDED_PATH_PROBABILITY = 0.75
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
# Each test runs in a fresh database with its sequences reset, so the seeded client key is
# always id 1 (the schemas are loaded at collection, before any database exists).
SEEDED_CLIENT_KEY_ID = 1


@pytest.fixture
def seeded(django_db_reset_sequences):
    """The objects generated requests address: one tenant, one product with a bit of all.

    A transactional database with sequences reset: the application commits for real, as in
    production (a failing statement must not poison a test-wide transaction and turn later
    answers into 500s), and ids are the same on every run.
    """
    token = api_token_create(username="contract")
    user = get_user_model().objects.get(username="contract")
    product = product_create(user=user, key="widget", name="Widget")
    step_create(product=product, key="etch", name="Etch")
    experiment = experiment_create(
        product=product, key="exp", step="etch", variants=[{"key": "a"}, {"key": "b"}]
    )
    metric_create(product=product, key="thickness", lower_limit=0.9, upper_limit=1.1)
    assignment_force(experiment=experiment, unit_key="SN-1", variant_key="a", actor="contract")
    measurements_record(
        product=product,
        rows=[
            MeasurementRow(metric="thickness", unit=f"SN-{n}", value=1 + n / 100) for n in (1, 2)
        ],
    )
    client_key = client_key_create(product=product, name="contract")
    assert client_key.row.id == SEEDED_CLIENT_KEY_ID
    return {"admin_token": token.secret, "client_key": client_key.secret}


def _config(path_values: dict[str, list]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {
                # The tests send a real credential; generated ones would only answer 401.
                "with-security-parameters": False,
            },
            "dictionaries": {name: {"values": values} for name, values in path_values.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": SEEDED_PATH_PROBABILITY}
                for name in path_values
            },
        }
    )


application = get_wsgi_application()
admin = schemathesis.openapi.from_wsgi(
    "/api/admin/v1/openapi.json",
    application,
    config=_config(
        {
            "product": ["widget"],
            "step": ["etch"],
            "metric": ["thickness"],
            "experiment": ["exp"],
            "variant": ["a", "b"],
            "unit": ["SN-1", "SN-2"],
            "key_id": [SEEDED_CLIENT_KEY_ID],
        }
    ),
)
decide = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json", application, config=_config({"key": ["exp"]})
)


def operations(schema) -> list:
    """One test per operation, named by it ("GET /api/admin/v1/products").

    Plain pytest parametrization rather than schemathesis.pytest: with pytest 9.2,
    schemathesis 4.32's `from_fixture` fails (`Function` has no `_nodeid`) and
    `@schema.parametrize()` gives every operation the same test id.
    """
    return [
        pytest.param(result.ok(), id=result.ok().label) for result in schema.get_all_operations()
    ]


ADMIN = "/api/admin/v1/products/{product}"


@dataclass(frozen=True)
class Excused:
    """A valid request refused for a rule JSON Schema cannot state: on `operations`, an answer
    with `status` whose detail matches `detail` (a regular expression, searched)."""

    operations: tuple[str, ...]
    status: int
    detail: str
    reason: str


EXCUSED = [
    # Rules between the fields of one request.
    Excused(
        (f"POST {ADMIN}/metrics", f"PATCH {ADMIN}/metrics/{{metric}}"),
        400,
        r"^\w+ \(\S+\) must not exceed \w+ \(\S+\)",
        "lower_limit <= nominal <= upper_limit compares fields with each other",
    ),
    Excused(
        (f"POST {ADMIN}/experiments", f"PATCH {ADMIN}/experiments/{{experiment}}"),
        422,
        r"^conditions: condition \d+: (\w+ takes |value \d+ \(.*\) is not a string: )",
        "the values a condition takes depend on its operator (none, one, a list; a string, a "
        "number or a SemVer version)",
    ),
    Excused(
        (f"POST {ADMIN}/experiments", f"PATCH {ADMIN}/experiments/{{experiment}}"),
        422,
        r"^start_at must be before end_at$|^layer_range ",
        "start_at < end_at, and a layer range needs its layer and start < end",
    ),
    Excused(
        (f"POST {ADMIN}/designs",),
        422,
        r"^(runs for \d+ factors must be one of |factor '.*' is listed twice$)",
        "the runs a design may have depend on its number of factors (a power of two from "
        "factors + 1 to 2^factors); the factors are distinct",
    ),
    # Rules on stored data: what a request names must exist, and PATCH merges with what is
    # stored (a lower_limit above the stored upper_limit).
    Excused(
        (
            f"POST {ADMIN}/experiments",
            f"PATCH {ADMIN}/experiments/{{experiment}}",
            f"POST {ADMIN}/metrics",
            f"PATCH {ADMIN}/metrics/{{metric}}",
        ),
        400,
        r"^(no step '.*' in product '.*'|step '.*' is removed; )",
        "the step named must be one of the product's",
    ),
    Excused(
        (f"POST {ADMIN}/experiments", f"PATCH {ADMIN}/experiments/{{experiment}}"),
        422,
        r"^(no layer '.*' in product '.*'|layer '.*' is removed; )",
        "the layer named must be one of the product's",
    ),
    Excused(
        (f"PUT {ADMIN}/experiments/{{experiment}}/assignments/{{unit}}",),
        400,
        r"^no variant '.*' in experiment '.*'$",
        "the variant named must be one of the experiment's",
    ),
    Excused(
        (f"POST {ADMIN}/experiments/{{experiment}}/assignments",),
        400,
        r"'type': 'unknown_variant'",
        "the variants named must be the experiment's",
    ),
    Excused(
        (f"POST {ADMIN}/measurements",),
        400,
        r"'type': 'unknown_metric'",
        "the metrics named must be the product's",
    ),
    Excused(
        (f"GET {ADMIN}/analysis/factorial", f"GET {ADMIN}/analysis/factorial.svg"),
        400,
        r"needs at least 2 variants that are not removed to be a factor$",
        "a factor is an experiment with two variants or more",
    ),
    Excused(
        (f"POST {ADMIN}/designs",),
        422,
        r"^(no experiment '.*' in product '.*'$|experiment '.*' (has \d+ variants|is in layer|"
        r"is a factor of design))",
        "a factor must be one of the product's experiments, with two variants, in no layer and "
        "no other design",
    ),
    Excused(
        (f"GET {ADMIN}/experiments/{{experiment}}/results",),
        422,
        r"^covariate: (no metric '.*' in this product$|.* is measured at step )",
        "the covariate must be one of the product's metrics, measured before the experiment's step",
    ),
    Excused(
        (f"GET {ADMIN}/export.csv",),
        400,
        r"^nothing to export: ",
        "an export needs an experiment or a metric in the product",
    ),
]


def excuse(failure: Exception, case, response) -> Excused | None:
    """The entry of EXCUSED that covers `failure` (a valid request refused), or None."""
    if not isinstance(failure, RejectedPositiveData):
        return None
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return None
    text = detail if isinstance(detail, str) else str(detail)
    for entry in EXCUSED:
        if (
            case.operation.label in entry.operations
            and response.status_code == entry.status
            and re.search(entry.detail, text)
        ):
            return entry
    return None


def has_invalid_requests(operation) -> bool:
    """Whether the schema forbids something a request to `operation` could send: in a body, a
    query parameter, or a path parameter that is not any string (a pattern, an integer)."""
    if list(operation.body) or list(operation.query):
        return True
    return any(
        parameter.definition.get("schema", {}).keys() - {"title", "type", "description"}
        or parameter.definition.get("schema", {}).get("type") != "string"
        for parameter in operation.path_parameters
    )


def fuzz(operation, *, token: str) -> None:
    """What schemathesis' fuzzing phase does: valid requests, then invalid ones where the
    schema has something to break, every answer checked.

    The seeded data is made once per operation and shared by its examples, like a live
    server's: what one example creates or removes, the next one sees.
    """
    modes = [GenerationMode.POSITIVE]
    if has_invalid_requests(operation):
        modes.append(GenerationMode.NEGATIVE)
    for mode in modes:

        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as group:
                if not all(excuse(failure, case, response) for failure in group.exceptions):
                    raise

        try:
            check()
        except Unsatisfiable:
            # Nothing that can be sent here is invalid (an optional query string of any
            # value): there is no negative request to send.
            if mode is not GenerationMode.NEGATIVE:
                raise


@pytest.mark.parametrize("operation", operations(admin))
def test_admin_api__conforms_and_never_5xx(operation, seeded):
    fuzz(operation, token=seeded["admin_token"])


@pytest.mark.parametrize("operation", operations(decide))
def test_decide_api__conforms_and_never_5xx(operation, seeded):
    fuzz(operation, token=seeded["client_key"])


def _refused(label: str, status: int, detail) -> tuple:
    failure = RejectedPositiveData(
        operation=label, message="refused", status_code=status, allowed_statuses=["2xx"]
    )
    case = SimpleNamespace(operation=SimpleNamespace(label=label))
    response = SimpleNamespace(status_code=status, json=lambda: {"detail": detail})
    return failure, case, response


def test_excused__a_listed_rule__excused_with_its_reason():
    refused = _refused(
        f"POST {ADMIN}/metrics", 400, "nominal (2.0) must not exceed upper_limit (1.0)"
    )
    assert "lower_limit <= nominal <= upper_limit" in excuse(*refused).reason


@pytest.mark.parametrize(
    ("label", "status", "detail"),
    [
        # The same rule on another operation, or with another status
        (f"POST {ADMIN}/steps", 400, "nominal (2.0) must not exceed upper_limit (1.0)"),
        (f"POST {ADMIN}/metrics", 422, "nominal (2.0) must not exceed upper_limit (1.0)"),
        # A refusal the schema could have prevented
        (f"POST {ADMIN}/metrics", 400, "a unit key may not contain control characters"),
        (
            f"POST {ADMIN}/experiments",
            422,
            "conditions: condition 0: attribute 'é' is not an attribute name",
        ),
    ],
)
def test_excused__anything_else__not_excused(label, status, detail):
    assert excuse(*_refused(label, status, detail)) is None
