"""Variants: the arms of an experiment. Their status and weight are what decide buckets by."""

import math
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from lab.errors import BadRequest, Conflict
from lab.models import DesignFactor, Experiment, Status, Variant
from lab.services.common import apply_changes
from lab.services.config_version import product_config_changed

# Large enough for any split people write (1/1, 90/10, 1000/1); small enough that a sum
# of weights can never overflow to infinity when decide normalises them.
WEIGHT_MAX = 1_000_000.0
# What decide compiles from a variant (its key is immutable).
DECIDE_FIELDS = frozenset({"status", "weight"})


@transaction.atomic
def check_not_a_factor(experiment: Experiment, change: str) -> None:
    """409 when the experiment is a factor of a design: a factor has exactly the two variants
    the design was created with, and no layer (docs/designs.md)."""
    design = (
        DesignFactor.objects.filter(experiment_id=experiment.pk, active=True)
        .values_list("design__key", flat=True)
        .first()
    )
    if design is not None:
        raise Conflict(
            f"experiment {experiment.key!r} is a factor of design {design!r}: {change} "
            "while the design exists (remove the design first)"
        )


def variant_create(*, experiment: Experiment, **fields) -> Variant:
    """Create a variant (`fields` as for `variant_create_unbumped`) and bump the config."""
    variant = variant_create_unbumped(experiment=experiment, **fields)
    product_config_changed(experiment.product)
    return variant


def variant_create_unbumped(
    *,
    experiment: Experiment,
    key: str,
    name: str = "",
    status: str = Status.ENABLED,
    weight: float = 1.0,
    is_control: bool = False,
) -> Variant:
    """Create a variant; the caller bumps the config version in its own transaction."""
    check_new_status(status)
    check_weight(weight)
    check_not_a_factor(experiment, "no variant can be added")
    _raise_conflict(experiment=experiment, key=key, is_control=is_control)
    variant = Variant(
        experiment=experiment,
        key=key,
        name=name or key,
        status=status,
        weight=weight,
        is_control=is_control,
    )
    _save_or_conflict(variant, lambda: variant.save(force_insert=True))
    return variant


@transaction.atomic
def variant_update(*, variant: Variant, actor: str, changes: dict) -> Variant:
    if "weight" in changes:
        check_weight(changes["weight"])
    if changes.get("status") == Status.REMOVED and variant.status != Status.REMOVED:
        check_not_a_factor(variant.experiment, "its variants cannot be removed")
    if changes.get("is_control") and not variant.is_control:
        _raise_conflict(
            experiment=variant.experiment, key=None, is_control=True, exclude_pk=variant.pk
        )
    changed: list[str] = []

    def save() -> None:
        changed.extend(
            apply_changes(
                obj=variant,
                changes=changes,
                product=variant.experiment.product,
                actor=actor,
                object_type="variant",
                object_key=f"{variant.experiment.key}/{variant.key}",
            )
        )

    _save_or_conflict(variant, save)
    if DECIDE_FIELDS.intersection(changed):
        product_config_changed(variant.experiment.product)
    return variant


def variant_remove(*, variant: Variant, actor: str) -> Variant:
    return variant_update(variant=variant, actor=actor, changes={"status": Status.REMOVED})


def check_new_status(status: str) -> None:
    """A new experiment or variant starts enabled or disabled (paused); never removed."""
    if status not in (Status.ENABLED, Status.DISABLED):
        raise BadRequest("a new object's status is enabled or disabled")


def check_weight(weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise BadRequest("weight must be a number")
    if not math.isfinite(weight) or not 0 <= weight <= WEIGHT_MAX:
        raise BadRequest(f"weight must be a finite number between 0 and {WEIGHT_MAX:g}")


def check_new_variants(variants: Iterable[dict]) -> None:
    """Variants given together (an experiment created with its variants) agree with each other."""
    seen: set[str] = set()
    controls: list[str] = []
    for variant in variants:
        if variant["key"] in seen:
            raise Conflict(f"variant key {variant['key']!r} is given twice")
        seen.add(variant["key"])
        check_weight(variant.get("weight", 1.0))
        if variant.get("is_control"):
            controls.append(variant["key"])
    if len(controls) > 1:
        raise Conflict(
            "the experiment has a control variant already: at most one variant may have "
            f"is_control true, got {', '.join(repr(key) for key in controls)}"
        )


def _raise_conflict(
    *, experiment: Experiment, key: str | None, is_control: bool, exclude_pk: int | None = None
) -> None:
    others = Variant.objects.filter(experiment=experiment).exclude(pk=exclude_pk)
    if key is not None and others.filter(key=key).exists():
        raise Conflict(
            f"a variant with key {key!r} exists already in experiment {experiment.key!r}"
        )
    if is_control:
        control = others.filter(is_control=True).values_list("key", flat=True).first()
        if control is not None:
            raise Conflict(
                f"the experiment has a control variant already: {control!r} "
                "(set is_control to false on it first)"
            )


def _save_or_conflict(variant: Variant, save) -> None:
    """Save in a savepoint; a uniqueness race lost to a concurrent write becomes a 409."""
    try:
        with transaction.atomic():
            save()
    except IntegrityError as exc:
        _raise_conflict(
            experiment=variant.experiment,
            key=variant.key,
            is_control=variant.is_control,
            exclude_pk=variant.pk,
        )
        raise Conflict("the variant conflicts with another variant of the experiment") from exc
