"""Fixtures for the decide API: a product with a client key, experiments made with the ORM."""

import json
import time
from dataclasses import dataclass

import pytest
from django.db import transaction
from django.test import Client

from decide import config
from decide import memory as decide_memory
from lab.models import Experiment, Product, Variant
from lab.services.config_version import product_config_changed
from lab.services.credentials import client_key_create
from rules.bucketing import bucket_position, choose, compile_ranges
from tests.conftest import requires_postgres
from tests.factories import ExperimentFactory, ProductFactory, StepFactory, VariantFactory


@pytest.fixture(autouse=True)
def _fresh_worker_memory():
    """Each test starts as a fresh worker (SQLite reuses ids across rolled-back tests)."""
    config.clear_memory()
    yield
    config.clear_memory()


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def memory(settings):
    """This process's memory of known units (decide.memory), listening and ready (its first
    heartbeat has found every notifying trigger). PostgreSQL only; the test must commit for
    real (transactional), since notifications are sent at commit."""
    requires_postgres()
    settings.DECIDE_KNOWN_UNITS = True
    decide_memory.reset()
    started = decide_memory.known_units()
    wait_until(lambda: started._listening and started._ready)
    yield started
    decide_memory.reset()


@dataclass
class DecideClient:
    """Talks to the decide API with a client key, as production software would."""

    product: Product
    secret: str
    client: Client

    def post(
        self, path: str, body=None, *, raw: bytes | None = None, key: str | None = None, **headers
    ):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        secret = self.secret if key is None else key
        if secret:
            headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {secret}")
        return self.client.post(path, data=data, content_type="application/json", **headers)

    def decide(self, unit: str, **filters) -> dict:
        response = self.post("/api/v1/decide", {"unit": unit, **filters})
        assert response.status_code == 200, response.content
        return response.json()["variants"]

    def batch(self, units: list[str], **filters) -> list[dict]:
        response = self.post("/api/v1/decide/batch", {"units": units, **filters})
        assert response.status_code == 200, response.content
        return response.json()["decisions"]

    def flag(self, key: str, unit: str):
        return self.post(f"/ofrep/v1/evaluate/flags/{key}", {"context": {"targetingKey": unit}})

    # --- Admin-side changes, as the admin services make them: the change and the version
    # bump in one transaction.

    def change(self, obj, **fields) -> None:
        with transaction.atomic():
            type(obj).objects.filter(pk=obj.pk).update(**fields)
            product_config_changed(self.product)
        obj.refresh_from_db()


@pytest.fixture
def decider(db) -> DecideClient:
    product = ProductFactory(key="widget")
    issued = client_key_create(product=product, name="line 1")
    return DecideClient(product=product, secret=issued.secret, client=Client())


def make_experiment(
    product: Product,
    key: str,
    variants=(("a", 1.0), ("b", 1.0)),
    *,
    coverage: float = 1.0,
    status: str = "enabled",
    step: str | None = None,
) -> Experiment:
    """An experiment with variants created in the given order (their bucketing order)."""
    step_obj = None
    if step is not None:
        step_obj = product.steps.filter(key=step).first() or StepFactory(product=product, key=step)
    experiment = ExperimentFactory(
        product=product, key=key, coverage=coverage, status=status, step=step_obj
    )
    for variant_key, weight in variants:
        VariantFactory(experiment=experiment, key=variant_key, weight=weight)
    with transaction.atomic():
        product_config_changed(product)
    return experiment


def variant(experiment: Experiment, key: str) -> Variant:
    return experiment.variants.get(key=key)


def _contract_ranges(experiment: Experiment):
    experiment.refresh_from_db()
    eligible = [
        (v.id, v.key, v.weight)
        for v in experiment.variants.order_by("id")
        if v.status == "enabled" and v.weight > 0
    ]
    return compile_ranges(eligible, experiment.coverage)


def expected_variant(experiment: Experiment, unit: str) -> str | None:
    """What the bucketing contract gives `unit` now (ignoring stored assignments)."""
    chosen = choose(_contract_ranges(experiment), bucket_position(experiment.salt, unit))
    return chosen.key if chosen else None


def unit_for(experiment: Experiment, variant_key: str | None, prefix: str = "SN") -> str:
    """A unit key the contract buckets into `variant_key` (None: outside coverage)."""
    ranges = _contract_ranges(experiment)
    for i in range(10_000):
        unit = f"{prefix}-{i}"
        chosen = choose(ranges, bucket_position(experiment.salt, unit))
        if (chosen.key if chosen else None) == variant_key:
            return unit
    raise AssertionError(f"no unit hashes to {variant_key!r}")


def remember(memory, decider, unit_key: str, **decide) -> dict:
    """Decide `unit_key` until this worker's memory answers for it; its last answer. A read
    that overlaps the listener's applying a notification (a heartbeat, most often: 20 a second)
    is rightly not kept, so one decision cannot be relied on to be remembered."""
    from decide.auth import parse_client_key

    credential = parse_client_key(decider.secret)
    answered: dict = {}

    def remembered() -> bool:
        answered.update(decider.decide(unit_key, **decide))
        return memory.get(credential, unit_key) is not None

    wait_until(remembered)
    return answered


@pytest.fixture
def known_unit(memory, decider):
    """A unit with stored assignments in three experiments, remembered by this worker."""
    for key in ("etch", "anneal", "dope"):
        make_experiment(decider.product, key)
    decider.decide("SN-1")  # stores

    def read_and_remembered() -> bool:
        # On a busy machine a read can come while the listener has not yet applied the
        # store's notification; an entry read then is not kept: read again.
        decider.decide("SN-1")
        return len(memory) == 1

    wait_until(read_and_remembered)
    return "SN-1"
