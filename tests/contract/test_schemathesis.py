"""Contract fuzzing: both OpenAPI schemas against the application, with schemathesis.

For every operation of the admin API (/api/admin/v1/openapi.json) and of the decide API
(/api/v1/openapi.json), schemathesis generates requests from the schema (valid ones and,
where the schema allows, hostile strings and numbers) and checks two things of every answer:
no 5xx (`not_a_server_error`) and a body that matches the documented schema for its status
(`response_schema_conformance`).

Requests go through the WSGI application in-process, authenticated (an admin token, a
client key). A seeded product "widget" with step "etch", metric "thickness", experiment
"exp" (variants "a" and "b"), unit "SN-1" and a client key is what the generated path
parameters name most of the time (schemathesis cannot guess keys); the rest of the time
they are generated, which exercises the 404s. Bounded and derandomized: MAX_EXAMPLES per
operation, the same cases on every run.
"""

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from lab.services.assignments import assignment_force
from lab.services.credentials import api_token_create, client_key_create
from lab.services.experiments import experiment_create
from lab.services.measurements import MeasurementRow, measurements_record
from lab.services.metrics import metric_create
from lab.services.products import product_create
from lab.services.steps import step_create

MAX_EXAMPLES = 40
# How often a path parameter names the seeded object rather than a generated string.
SEEDED_PATH_PROBABILITY = 0.75
CHECKS = [not_a_server_error, response_schema_conformance]
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


def fuzz(operation, *, token: str) -> None:
    """What schemathesis' fuzzing phase does: valid and invalid requests, every answer checked.

    The seeded data is made once per operation and shared by its examples, like a live
    server's: what one example creates or removes, the next one sees.
    """
    strategy = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=strategy)
    def check(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

    check()


@pytest.mark.parametrize("operation", operations(admin))
def test_admin_api__conforms_and_never_5xx(operation, seeded):
    fuzz(operation, token=seeded["admin_token"])


@pytest.mark.parametrize("operation", operations(decide))
def test_decide_api__conforms_and_never_5xx(operation, seeded):
    fuzz(operation, token=seeded["client_key"])
