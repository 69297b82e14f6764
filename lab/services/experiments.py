"""Experiments: what decide buckets units into. Every change decide sees bumps the version."""

import math

from django.db import transaction

from lab.errors import BadRequest
from lab.models import Experiment, Product, Status
from lab.services.common import apply_changes, conflict_on_duplicate
from lab.services.config_version import product_config_changed
from lab.services.steps import step_for_reference
from lab.services.variants import check_new_status, check_new_variants, variant_create_unbumped

# What decide compiles from an experiment (its key and salt are immutable).
DECIDE_FIELDS = frozenset({"status", "coverage", "step"})


@transaction.atomic
def experiment_create(
    *,
    product: Product,
    key: str,
    name: str = "",
    description: str = "",
    status: str = Status.ENABLED,
    step: str | None = None,
    coverage: float = 1.0,
    variants: list[dict] | None = None,
) -> Experiment:
    """Create an experiment, with its variants when given: all of it or nothing.

    `variants` are dicts of `variant_create` arguments, created in the order given (which
    is their bucketing order).
    """
    check_new_status(status)
    check_coverage(coverage)
    variants = variants or []
    check_new_variants(variants)
    step_obj = step_for_reference(product=product, key=step)
    with conflict_on_duplicate(
        f"an experiment with key {key!r} exists already in product {product.key!r}"
    ):
        experiment = Experiment.objects.create(
            product=product,
            key=key,
            name=name or key,
            description=description,
            status=status,
            step=step_obj,
            coverage=coverage,
        )
    for variant in variants:
        variant_create_unbumped(experiment=experiment, **variant)
    product_config_changed(product)
    return experiment


@transaction.atomic
def experiment_update(*, experiment: Experiment, actor: str, changes: dict) -> Experiment:
    changes = dict(changes)
    if "coverage" in changes:
        check_coverage(changes["coverage"])
    if "step" in changes:
        changes["step"] = step_for_reference(
            product=experiment.product, key=changes["step"], current=experiment.step
        )
    changed = apply_changes(
        obj=experiment,
        changes=changes,
        product=experiment.product,
        actor=actor,
        object_type="experiment",
        object_key=experiment.key,
    )
    if DECIDE_FIELDS.intersection(changed):
        product_config_changed(experiment.product)
    return experiment


def experiment_remove(*, experiment: Experiment, actor: str) -> Experiment:
    return experiment_update(experiment=experiment, actor=actor, changes={"status": Status.REMOVED})


def check_coverage(coverage: float) -> None:
    if isinstance(coverage, bool) or not isinstance(coverage, int | float):
        raise BadRequest("coverage must be a number")
    if not math.isfinite(coverage) or not 0 <= coverage <= 1:
        raise BadRequest("coverage must be a number between 0 and 1")
