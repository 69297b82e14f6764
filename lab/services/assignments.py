"""Forced assignments: an operator puts units (one, or a whole lot) on a variant.

A forced assignment wins like any stored one (docs/contract.md#3-the-decide-engine, rule 5),
so forcing changes what decide answers for those units only; decide reads stored assignments
from the database on every request, so no config version is bumped.

Forcing onto a `disabled` (closed) variant is allowed: closing stops the hash from sending
NEW units there, while forcing is an operator's deliberate choice of unit and variant (as
individual targets and forced variations are in other flag tools, whatever the weights).
A `removed` variant serves nobody, so forcing onto it is refused, and so is forcing in a
removed experiment.
"""

from collections.abc import Iterable, Sequence

from django.db import transaction

from lab.db import refresh_statistics_after_commit, retry_on_deadlock
from lab.errors import BadRequest
from lab.models import (
    Assignment,
    AssignmentSource,
    AuditEvent,
    Experiment,
    Status,
    Unit,
    Variant,
)
from lab.services.audit import Change, audit_records
from lab.services.bulk import BatchProblems, Upserted, check_batch_size
from lab.services.units import units_ensure


@retry_on_deadlock
@transaction.atomic
def assignments_force(
    *, experiment: Experiment, rows: Sequence[tuple[str, str]], actor: str
) -> Upserted:
    """Force each (unit key, variant key) of `rows`; all rows or none.

    Units are created as needed. Any bad row (unknown or removed variant, the same unit
    twice) refuses the whole batch with a 400 naming every bad row.
    """
    check_batch_size(count=len(rows), what="assignments")
    _check_experiment_open(experiment)
    variants = {variant.key: variant for variant in Variant.objects.filter(experiment=experiment)}
    problems = BatchProblems("assignments")
    first_row_of: dict[str, int] = {}
    targets: dict[str, Variant] = {}
    for index, (unit_key, variant_key) in enumerate(rows):
        if unit_key in first_row_of:
            problems.add(
                index,
                "unit",
                "duplicate_unit",
                f"unit {unit_key!r} is given already in row {first_row_of[unit_key]}",
            )
            continue
        first_row_of[unit_key] = index
        variant = variants.get(variant_key)
        problem = _variant_problem(variant, variant_key, experiment)
        if problem:
            problems.add(index, "variant", *problem)
            continue
        targets[unit_key] = variant
    problems.raise_if_any()
    return _force(experiment=experiment, targets=targets, variants=variants.values(), actor=actor)


@retry_on_deadlock
@transaction.atomic
def assignment_force(
    *, experiment: Experiment, unit_key: str, variant_key: str, actor: str
) -> tuple[Assignment, bool]:
    """Force one unit onto a variant; the stored assignment, and whether it is new."""
    _check_experiment_open(experiment)
    variants = {variant.key: variant for variant in Variant.objects.filter(experiment=experiment)}
    variant = variants.get(variant_key)
    problem = _variant_problem(variant, variant_key, experiment)
    if problem:
        raise BadRequest(problem[1])
    result = _force(
        experiment=experiment,
        targets={unit_key: variant},
        variants=variants.values(),
        actor=actor,
    )
    assignment = Assignment.objects.select_related("unit", "variant").get(
        experiment=experiment, unit__product_id=experiment.product_id, unit__key=unit_key
    )
    return assignment, result.created == 1


def _force(
    *, experiment: Experiment, targets: dict[str, Variant], variants: Iterable[Variant], actor: str
) -> Upserted:
    """Upsert the forced assignments and audit each unit whose variant changed.

    Five statements whatever the batch size: create the missing units and lock them all,
    lock and read the current assignments (for the counts and the audit's "from"), upsert,
    record the audit events. Two operators forcing the same units at once take turns on
    the unit locks, so counts and audit events are exact. The one race left is with
    decide: a unit decided for the very first time in the same instant is counted as
    created and audited as coming from no variant.
    """
    unit_ids = units_ensure(product_id=experiment.product_id, keys=targets.keys())
    by_unit_id = sorted((unit_ids[key], key, variant) for key, variant in targets.items())
    previous = dict(
        Assignment.objects.select_for_update()
        .filter(experiment=experiment, unit_id__in=[unit_id for unit_id, _, _ in by_unit_id])
        .order_by("unit_id")
        .values_list("unit_id", "variant_id")
    )
    Assignment.objects.bulk_create(
        [
            Assignment(
                experiment=experiment,
                unit_id=unit_id,
                variant=variant,
                source=AssignmentSource.FORCED,
            )
            for unit_id, _, variant in by_unit_id
        ],
        update_conflicts=True,
        unique_fields=["experiment", "unit"],
        update_fields=["variant", "source", "updated_at"],
    )
    variant_keys = {variant.id: variant.key for variant in variants}
    audit_records(
        product_id=experiment.product_id,
        actor=actor,
        action=AuditEvent.Action.FORCED,
        object_type="assignment",
        changes=[
            Change(
                assignment_object_key(experiment.key, unit_key),
                variant_keys.get(previous.get(unit_id), ""),
                variant.key,
            )
            for unit_id, unit_key, variant in by_unit_id
            if previous.get(unit_id) != variant.id
        ],
    )
    refresh_statistics_after_commit(
        tables=(Unit._meta.db_table, Assignment._meta.db_table), changed_rows=len(by_unit_id)
    )
    return Upserted(created=len(by_unit_id) - len(previous), updated=len(previous))


def assignment_object_key(experiment_key: str, unit_key: str) -> str:
    """How the audit trail names the assignment of a unit in an experiment."""
    return f"{experiment_key}/{unit_key}"


def assignments_rebucketed_audit(
    *, product_id: int, actor: str, moves: Iterable[tuple[str, str, str, str]]
) -> int:
    """Audit units that decide moved off a removed variant: (experiment key, unit key,
    removed variant key, new variant key) each. The caller's transaction holds the move."""
    return audit_records(
        product_id=product_id,
        actor=actor,
        action=AuditEvent.Action.REBUCKETED,
        object_type="assignment",
        changes=[
            Change(assignment_object_key(experiment_key, unit_key), old, new)
            for experiment_key, unit_key, old, new in moves
        ],
    )


def _check_experiment_open(experiment: Experiment) -> None:
    if experiment.status == Status.REMOVED:
        raise BadRequest(
            f"experiment {experiment.key!r} is removed: set its status back to enabled or "
            "disabled before forcing units onto its variants"
        )


def _variant_problem(
    variant: Variant | None, variant_key: str, experiment: Experiment
) -> tuple[str, str] | None:
    if variant is None:
        return "unknown_variant", f"no variant {variant_key!r} in experiment {experiment.key!r}"
    if variant.status == Status.REMOVED:
        return (
            "removed_variant",
            f"variant {variant_key!r} is removed and serves no unit; "
            "force onto an enabled or disabled variant",
        )
    return None
