"""Metrics: what is measured on units, against optional spec limits."""

import math

from django.db import transaction

from lab.errors import BadRequest
from lab.models import Metric, Product, Status
from lab.services.common import apply_changes, conflict_on_duplicate
from lab.services.steps import step_for_reference

LIMIT_FIELDS = ("lower_limit", "nominal", "upper_limit")


def metric_create(
    *,
    product: Product,
    key: str,
    name: str = "",
    step: str | None = None,
    lower_limit: float | None = None,
    nominal: float | None = None,
    upper_limit: float | None = None,
    unit_of_measure: str = "",
) -> Metric:
    check_limits(lower_limit=lower_limit, nominal=nominal, upper_limit=upper_limit)
    step_obj = step_for_reference(product=product, key=step)
    with conflict_on_duplicate(
        f"a metric with key {key!r} exists already in product {product.key!r}"
    ):
        return Metric.objects.create(
            product=product,
            key=key,
            name=name or key,
            step=step_obj,
            lower_limit=lower_limit,
            nominal=nominal,
            upper_limit=upper_limit,
            unit_of_measure=unit_of_measure,
        )


@transaction.atomic
def metric_update(*, metric: Metric, actor: str, changes: dict) -> Metric:
    changes = dict(changes)
    if "step" in changes:
        changes["step"] = step_for_reference(
            product=metric.product, key=changes["step"], current=metric.step
        )
    # A PATCH may move one limit past another that it does not mention: check the result.
    merged = {field: changes.get(field, getattr(metric, field)) for field in LIMIT_FIELDS}
    check_limits(**merged)
    apply_changes(
        obj=metric,
        changes=changes,
        product=metric.product,
        actor=actor,
        object_type="metric",
        object_key=metric.key,
    )
    return metric


def metric_remove(*, metric: Metric, actor: str) -> Metric:
    return metric_update(metric=metric, actor=actor, changes={"status": Status.REMOVED})


def check_limits(
    *, lower_limit: float | None, nominal: float | None, upper_limit: float | None
) -> None:
    """Each limit is optional and finite; those given keep lower <= nominal <= upper."""
    given = {"lower_limit": lower_limit, "nominal": nominal, "upper_limit": upper_limit}
    for field, value in given.items():
        if value is not None and not math.isfinite(value):
            raise BadRequest(f"{field} must be a finite number")
    ordered = [(field, value) for field, value in given.items() if value is not None]
    problems = [
        f"{low_field} ({low}) must not exceed {high_field} ({high})"
        for i, (low_field, low) in enumerate(ordered)
        for high_field, high in ordered[i + 1 :]
        if low > high
    ]
    if problems:
        raise BadRequest("; ".join(problems))
