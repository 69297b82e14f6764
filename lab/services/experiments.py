"""Experiments: what decide buckets units into. Every change decide sees bumps the version.

Targeting (docs/decide.md, "Targeting, schedules and layers") is validated here at write
time: conditions compile (rules.targeting), a schedule has start_at < end_at, and enabled
experiments of one layer never overlap. The overlap check runs with the layer row locked
(lab.services.layers.layer_lock), so concurrent writes to one layer cannot both pass it.
Every change of status, conditions, schedule, layer or randomize_by is in the audit trail;
randomize_by cannot change once the experiment has an assignment (it would move units).
"""

import math
import re
from datetime import datetime

import orjson
from django.db import transaction

from lab.errors import BadRequest, Conflict, Unprocessable
from lab.models import AuditEvent, Experiment, Layer, Product, Status
from lab.services.audit import audit_record
from lab.services.common import apply_changes, conflict_on_duplicate
from lab.services.config_version import product_config_changed
from lab.services.layers import layer_for_reference, layer_lock
from lab.services.steps import step_for_reference
from lab.services.variants import (
    check_new_status,
    check_new_variants,
    check_not_a_factor,
    variant_create_unbumped,
)
from rules.targeting import ATTRIBUTE_NAME_PATTERN, TargetingError, compile_conditions

# What decide compiles from an experiment (its key and salt are immutable).
DECIDE_FIELDS = frozenset(
    {"status", "coverage", "step", "conditions", "start_at", "end_at", "layer", "layer_start"}
    | {"layer_end", "randomize_by"}
)
_UNSET = object()


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
    conditions: list[dict] | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    layer: str | None = None,
    layer_range: tuple[float, float] | None = None,
    randomize_by: str | None = None,
    actor: str = "",
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
    conditions = check_conditions(conditions or [])
    check_schedule(start_at, end_at)
    layer_obj, layer_start, layer_end = _layer_slot(product, None, layer, layer_range)
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
            conditions=conditions,
            start_at=start_at,
            end_at=end_at,
            layer=layer_obj,
            layer_start=layer_start,
            layer_end=layer_end,
            randomize_by=check_randomize_by(randomize_by),
        )
    _check_overlap(experiment)
    for variant in variants:
        variant_create_unbumped(experiment=experiment, **variant)
    for field in ("conditions", "schedule", "layer", "randomize_by"):
        if after := _audit_value(experiment, field):
            _audit(experiment, actor, field, "", after)
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
    if "conditions" in changes:
        changes["conditions"] = check_conditions(changes["conditions"] or [])
    if "randomize_by" in changes:
        changes["randomize_by"] = check_randomize_by(changes["randomize_by"])
        if changes["randomize_by"] != experiment.randomize_by and experiment.assignments.exists():
            raise Conflict(
                f"experiment {experiment.key!r} has assignments: changing randomize_by "
                f"(from {experiment.randomize_by!r} to {changes['randomize_by']!r}) would move "
                "its units to other variants; create a new experiment instead"
            )
    check_schedule(
        changes.get("start_at", experiment.start_at), changes.get("end_at", experiment.end_at)
    )
    if changes.get("layer") is not None:
        check_not_a_factor(experiment, "it cannot join a layer")
    if "layer" in changes or "layer_range" in changes:
        layer_key = changes.pop("layer", _UNSET)
        layer_range = changes.pop("layer_range", _UNSET)
        current_key = experiment.layer.key if experiment.layer_id else None
        layer_obj, start, end = _layer_slot(
            experiment.product,
            experiment.layer if experiment.layer_id else None,
            current_key if layer_key is _UNSET else layer_key,
            _current_range(experiment) if layer_range is _UNSET else layer_range,
            range_given=layer_range is not _UNSET,
        )
        changes.update(layer=layer_obj, layer_start=start, layer_end=end)

    before = {
        field: _audit_value(experiment, field)
        for field in ("conditions", "schedule", "layer", "randomize_by")
    }
    changed = apply_changes(
        obj=experiment,
        changes=changes,
        product=experiment.product,
        actor=actor,
        object_type="experiment",
        object_key=experiment.key,
    )
    if {"status", "layer", "layer_start", "layer_end"}.intersection(changed):
        _check_overlap(experiment)
    for field, old in before.items():
        new = _audit_value(experiment, field)
        if new != old:
            _audit(experiment, actor, field, old, new)
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


def check_conditions(conditions: list) -> list[dict]:
    """The conditions as stored: validated and normalised (always with `values`)."""
    try:
        compiled = compile_conditions(conditions)
    except TargetingError as exc:
        raise Unprocessable(f"conditions: {exc}") from exc
    return [condition.as_data() for condition in compiled]


def check_randomize_by(name: str | None) -> str | None:
    """The name of the unit attribute an experiment randomizes by (null: the unit itself)."""
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(ATTRIBUTE_NAME_PATTERN, name):
        raise Unprocessable(
            f"randomize_by: {name!r} is not an attribute name ({ATTRIBUTE_NAME_PATTERN})"
        )
    return name


def check_schedule(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and not start_at < end_at:
        raise Unprocessable(
            f"start_at ({start_at.isoformat()}) must be before end_at ({end_at.isoformat()})"
        )


def _current_range(experiment: Experiment) -> tuple[float, float] | None:
    if experiment.layer_start is None:
        return None
    return (experiment.layer_start, experiment.layer_end)


def _layer_slot(
    product: Product,
    current: Layer | None,
    key: str | None,
    layer_range,
    *,
    range_given: bool = True,
) -> tuple[Layer | None, float | None, float | None]:
    """The (layer, start, end) an experiment is given; a layer needs a range and back."""
    if key is None:
        if layer_range is not None and range_given:
            raise Unprocessable("layer_range needs a layer: give the layer's key as well")
        return None, None, None
    if layer_range is None:
        raise Unprocessable(
            f"an experiment in layer {key!r} needs a layer_range [start, end), e.g. [0, 0.5]"
        )
    start, end = layer_range
    if not (0 <= start < end <= 1):
        raise Unprocessable(f"layer_range [{start!r}, {end!r}] must have 0 <= start < end <= 1")
    layer = layer_for_reference(product=product, key=key, current=current)
    return layer, float(start), float(end)


def _check_overlap(experiment: Experiment) -> None:
    """Refuse (409) an enabled experiment whose slot overlaps another enabled one's.

    The layer row is locked first: of two concurrent writes to one layer, the second one
    waits for the first to commit and then sees its range.
    """
    if experiment.layer_id is None or experiment.status != Status.ENABLED:
        return
    layer_lock(layer_id=experiment.layer_id)
    other = (
        Experiment.objects.filter(
            layer_id=experiment.layer_id,
            status=Status.ENABLED,
            layer_start__lt=experiment.layer_end,
            layer_end__gt=experiment.layer_start,
        )
        .exclude(pk=experiment.pk)
        .order_by("layer_start", "id")
        .values_list("key", "layer_start", "layer_end")
        .first()
    )
    if other is not None:
        key, start, end = other
        raise Conflict(
            f"layer_range [{experiment.layer_start:g}, {experiment.layer_end:g}) overlaps "
            f"experiment {key!r} ([{start:g}, {end:g})) in layer {experiment.layer.key!r}: "
            "enabled experiments of one layer never share a unit"
        )


def _audit_value(experiment: Experiment, field: str) -> str:
    if field == "randomize_by":
        return experiment.randomize_by or ""
    if field == "conditions":
        return orjson.dumps(experiment.conditions or []).decode() if experiment.conditions else ""
    if field == "schedule":
        if experiment.start_at is None and experiment.end_at is None:
            return ""
        start = experiment.start_at.isoformat() if experiment.start_at else ""
        end = experiment.end_at.isoformat() if experiment.end_at else ""
        return f"{start}/{end}"
    if experiment.layer_id is None:
        return ""
    return f"{experiment.layer.key}[{experiment.layer_start:g}, {experiment.layer_end:g})"


_ACTIONS = {
    "conditions": AuditEvent.Action.CONDITIONS_CHANGED,
    "schedule": AuditEvent.Action.SCHEDULE_CHANGED,
    "layer": AuditEvent.Action.LAYER_CHANGED,
    "randomize_by": AuditEvent.Action.RANDOMIZE_BY_CHANGED,
}


def _audit(experiment: Experiment, actor: str, field: str, old: str, new: str) -> None:
    audit_record(
        product=experiment.product,
        actor=actor,
        action=_ACTIONS[field],
        object_type="experiment",
        object_key=experiment.key,
        from_value=old,
        to_value=new,
    )
