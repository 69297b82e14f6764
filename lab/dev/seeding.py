"""Create what is missing of a product described as data (the demo, benchmark and drill
products): re-running keeps everything that exists, including an operator's changes."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from lab.models import Experiment, Metric, Product, Step
from lab.services.experiments import experiment_create
from lab.services.metrics import metric_create
from lab.services.products import product_create
from lab.services.steps import step_create


@dataclass(frozen=True)
class Seeded:
    product: Product
    created: bool


@transaction.atomic
def product_seed(
    *,
    username: str,
    key: str,
    name: str,
    steps: Sequence[dict] = (),
    experiments: Sequence[dict] = (),
    metrics: Sequence[dict] = (),
) -> Seeded:
    """Ensure `username` has product `key` with these steps, experiments and metrics, each
    given as the keyword arguments of its create service."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    product = Product.objects.filter(user=user, key=key).first()
    created = product is None
    if created:
        product = product_create(user=user, key=key, name=name)
    for model, specs, create in (
        (Step, steps, step_create),
        (Experiment, experiments, experiment_create),
        (Metric, metrics, metric_create),
    ):
        existing = set(model.objects.filter(product=product).values_list("key", flat=True))
        for spec in specs:
            if spec["key"] not in existing:
                create(product=product, **spec)
    return Seeded(product=product, created=created)
