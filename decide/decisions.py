"""Decide units: stored assignments, the compiled config and the engine, put together.

One read (decide.store.read_units: the key check, the product's status and config version,
and the units' assignments), the config from memory (decide.config), the pure engine, then
at most one write for new assignments; re-bucketings off removed variants and read-backs
after a lost race are the only extra statements, and they are rare. Batches are set-based:
the same statements for 1 or 1000 units.
"""

from collections.abc import Sequence
from typing import NamedTuple

from django.db import transaction

from decide import metrics, store
from decide.auth import ClientCredential
from decide.config import ProductConfig, get_config
from decide.engine import CompiledExperiment, decide_one
from lab.models import AssignmentSource, AuditEvent, Status, Variant

REBUCKETING_ACTOR = "decide"


class Reason:
    """Why a unit got its answer (OFREP reports it; the decide API only shows the variant)."""

    ASSIGNED = "assigned"  # first decision: hashed into a variant and stored
    STORED = "stored"  # an earlier decision, kept (sticky)
    FORCED = "forced"  # an operator's forced assignment
    REBUCKETED = "rebucketed"  # its variant was removed: hashed again and stored
    OUTSIDE = "outside"  # outside coverage, or no eligible variant: nothing stored
    PAUSED = "paused"  # the experiment is disabled
    DISABLED = "disabled"  # the product is disabled
    UNKNOWN = "unknown"  # no such experiment (or not at the asked step)


class Answer(NamedTuple):
    variant: str | None
    reason: str


class Decided(NamedTuple):
    config: ProductConfig
    # unit key -> experiment key -> answer; experiments in the order they were selected.
    answers: dict[str, dict[str, Answer]]


class _Pending(NamedTuple):
    unit_key: str
    experiment: CompiledExperiment
    variant_id: int
    old_variant_id: int | None  # set for a re-bucketing


_SOURCE_REASON = {AssignmentSource.FORCED: Reason.FORCED}


def decide(
    credential: ClientCredential,
    unit_keys: Sequence[str],
    *,
    experiments: Sequence[str] | None = None,
    step: str | None = None,
    include_paused: bool = False,
) -> Decided:
    """Decide every (unit, selected experiment) and persist the new answers.

    `unit_keys` must be distinct. `experiments` selects by key in the given order (unknown
    or paused keys answer no variant); otherwise every enabled experiment, at `step` if
    given. `include_paused` adds the paused experiments (OFREP bulk lists them).
    """
    state, units = store.read_units(credential, unit_keys)
    config = get_config(state.product_id, state.config_version)
    selected = _select(config, experiments, step, include_paused)
    product_enabled = state.status == Status.ENABLED

    answers: dict[str, dict[str, Answer]] = {}
    pending: list[_Pending] = []
    empty: dict = {}
    for unit_key in unit_keys:
        unit = units.get(unit_key)
        stored_by_experiment = unit.assignments if unit is not None else empty
        result: dict[str, Answer] = {}
        for key, experiment, null_reason in selected:
            if experiment is None:
                result[key] = Answer(None, null_reason)
                continue
            if not product_enabled:
                result[key] = Answer(None, Reason.DISABLED)
                continue
            stored = stored_by_experiment.get(experiment.id)
            stored_id = stored.variant_id if stored is not None else None
            variant_id, source = decide_one(experiment, unit_key, stored_id)
            if source == "stored":
                reason = _SOURCE_REASON.get(stored.source, Reason.STORED)
                result[key] = Answer(experiment.variant_keys_by_id[variant_id], reason)
            elif variant_id is None:
                result[key] = Answer(None, Reason.OUTSIDE)
            else:
                pending.append(_Pending(unit_key, experiment, variant_id, stored_id))
                result[key] = Answer(None, Reason.OUTSIDE)  # replaced once stored
        answers[unit_key] = result

    if pending:
        known_units = {key: unit.unit_id for key, unit in units.items()}
        _persist(state.product_id, known_units, pending, answers)
    return Decided(config, answers)


def _select(
    config: ProductConfig,
    experiments: Sequence[str] | None,
    step: str | None,
    include_paused: bool,
) -> list[tuple[str, CompiledExperiment | None, str]]:
    if experiments is not None:
        selected = []
        for key in dict.fromkeys(experiments):
            experiment = config.by_key.get(key)
            if experiment is not None and (step is None or experiment.step_key == step):
                selected.append((key, experiment, Reason.OUTSIDE))
            elif experiment is None and key in config.paused_keys:
                selected.append((key, None, Reason.PAUSED))
            else:
                selected.append((key, None, Reason.UNKNOWN))
        return selected
    chosen = config.experiments if step is None else config.by_step.get(step, ())
    selected = [(e.key, e, Reason.OUTSIDE) for e in chosen]
    if include_paused:
        selected.extend((key, None, Reason.PAUSED) for key in config.paused_keys)
    return selected


def _persist(
    product_id: int,
    known_units: dict[str, int],
    pending: list[_Pending],
    answers: dict[str, dict[str, Answer]],
) -> None:
    new = [p for p in pending if p.old_variant_id is None]
    moves = [p for p in pending if p.old_variant_id is not None]
    unit_ids = dict(known_units)
    written: set[tuple[int, int]] = set()

    if new:
        new_unit_ids, inserted = store.insert_assignments(
            product_id=product_id,
            known_units=known_units,
            new=[store.NewAssignment(p.unit_key, p.experiment.id, p.variant_id) for p in new],
        )
        unit_ids.update(new_unit_ids)
        written |= inserted
        metrics.assignments_created.inc(len(inserted))
    if moves:
        written |= _rebucket(product_id, unit_ids, moves)

    lost = {
        pair
        for p in pending
        if (pair := (unit_ids.get(p.unit_key), p.experiment.id)) not in written
        and pair[0] is not None
    }
    winners = store.read_assignments(lost) if lost else {}
    for p in pending:
        pair = (unit_ids.get(p.unit_key), p.experiment.id)
        if pair in written:
            reason = Reason.ASSIGNED if p.old_variant_id is None else Reason.REBUCKETED
            answer = Answer(p.experiment.variant_keys_by_id[p.variant_id], reason)
        elif pair in winners:
            # A concurrent request stored this pair first: its answer is the answer.
            winner = winners[pair]
            reason = _SOURCE_REASON.get(winner.source, Reason.STORED)
            answer = Answer(_variant_key(p.experiment, winner.variant_id), reason)
        else:
            # Nothing stored and nothing to read back (the unit or row vanished): answer
            # what was decided; the next decision stores it.
            answer = Answer(p.experiment.variant_keys_by_id[p.variant_id], Reason.ASSIGNED)
        answers[p.unit_key][p.experiment.key] = answer


def _rebucket(
    product_id: int, unit_ids: dict[str, int], moves: list[_Pending]
) -> set[tuple[int, int]]:
    """Move units off removed variants and keep the earlier variant in the audit trail."""
    with transaction.atomic():
        moved = store.rebucket_assignments(
            [
                store.Rebucketing(
                    unit_ids[p.unit_key], p.experiment.id, p.old_variant_id, p.variant_id
                )
                for p in moves
            ]
        )
        events = [
            AuditEvent(
                product_id=product_id,
                actor=REBUCKETING_ACTOR,
                action=AuditEvent.Action.REBUCKETED,
                object_type="assignment",
                object_key=f"{p.experiment.key}/{p.unit_key}",
                from_value=_variant_key(p.experiment, p.old_variant_id),
                to_value=p.experiment.variant_keys_by_id[p.variant_id],
            )
            for p in moves
            if (unit_ids[p.unit_key], p.experiment.id) in moved
        ]
        if events:
            AuditEvent.objects.bulk_create(events)
    metrics.assignments_rebucketed.inc(len(moved))
    return moved


def _variant_key(experiment: CompiledExperiment, variant_id: int) -> str:
    key = experiment.variant_keys_by_id.get(variant_id)
    if key is None:  # created after this config was compiled (a racer saw a newer one)
        key = Variant.objects.filter(pk=variant_id).values_list("key", flat=True).first()
    return key or ""
