"""Decide units: stored assignments, the compiled config and the engine, put together.

In three steps, each done once:

1. decide: one read (decide.store.read_units: the key check, the product's status and
   config version, and the units' assignments), the config (decide.config), then the pure
   engine for every (unit, experiment). The result is a plan: final answers, and the
   writes that first decisions and re-bucketings need.
2. store: at most one statement for new assignments; re-bucketings off removed variants
   (with their audit events) and read-backs after a lost race are the only extra
   statements, and they are rare.
3. answer: from the plan and what the database holds now. A variant is reported for a
   write only if the row is stored (by this request, or by a concurrent one whose answer
   is then the answer).

Batches are set-based: the same statements for 1 or 1000 units. See docs/decide.md.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from django.db import DatabaseError, transaction

from decide import config as config_cache
from decide import memory, metrics, store
from decide.auth import ClientCredential, InvalidClientKey
from decide.config import ProductConfig
from decide.memory import policy
from decide.memory.entries import ATTRIBUTES_NOT_KEPT
from lab.errors import ServiceUnavailable
from lab.services.assignments import assignments_rebucketed_audit
from rules.bucketing import EMPTY_ATTRIBUTES, CompiledExperiment, decide_one
from rules.vocabulary import Reason, Status, reason_of_stored

REBUCKETING_ACTOR = "decide"
# Where the hot path leaves a `Handed` read in the WSGI environ (request.META) for the view.
# A WSGI server names what a client sends HTTP_*: no request can set this.
HANDED_ENVIRON_KEY = "lab.decide.handed"


class Answer(NamedTuple):
    variant: str | None
    reason: Reason


class Decided(NamedTuple):
    config: ProductConfig
    # unit key -> experiment key -> answer; experiments in the order they were selected.
    answers: dict[str, dict[str, Answer]]
    # What memory answered it from (a single unit's decision from memory), else None.
    remembered: memory.Known | None = None


class _Write(NamedTuple):
    """A decision that must be stored before it is an answer."""

    unit_key: str
    experiment: CompiledExperiment
    variant_id: int
    old_variant_id: int | None  # set for a re-bucketing

    @property
    def reason(self) -> Reason:
        return Reason.HASH if self.old_variant_id is None else Reason.REBUCKETED


class _Plan(NamedTuple):
    # unit key -> experiment key -> an answer, or the write it waits for
    decisions: dict[str, dict[str, Answer | _Write]]
    writes: list[_Write]
    # A stored variant the config does not know: only a wrong config can say so.
    config_disagrees: bool
    # A condition was tested: the answer depends on the unit's attributes.
    attributes_used: bool


class _ConfigDisagrees(Exception):
    """The database refused or contradicted what the config said (see `decide`)."""


class Handed(NamedTuple):
    """What `decide_if_read` read for a decision it did not answer, for `decide` to use
    instead of reading again: the state and units read, or the error the read raised."""

    credential: ClientCredential
    unit_key: str
    # The memory's generation before the read (None: memory off), as `decide` takes it.
    generation: int | None
    state: store.ProductState | None = None
    units: dict[str, store.UnitRow] | None = None
    error: Exception | None = None

    def of(self, credential: ClientCredential, unit_keys: Sequence[str]) -> bool:
        """Whether this is the read of the decision `decide` was asked for."""
        return (
            len(unit_keys) == 1 and unit_keys[0] == self.unit_key and credential == self.credential
        )


def decide(
    credential: ClientCredential,
    unit_keys: Sequence[str],
    *,
    experiments: Sequence[str] | None = None,
    step: str | None = None,
    include_paused: bool = False,
    attributes: Mapping[str, Mapping[str, object]] | None = None,
    handed: Handed | None = None,
) -> Decided:
    """Decide every (unit, selected experiment), store the new answers, and answer.

    `unit_keys` must be distinct. `attributes` maps a unit key to the (valid) attributes
    sent with its decision: overlaid on the unit's stored ones, key by key, for the
    experiments' conditions, and stored with a unit this decision creates. `experiments`
    selects by key in the given order (unknown or paused keys answer no variant); otherwise
    every enabled experiment, at `step` if given. `include_paused` adds the paused
    experiments (OFREP bulk lists them).

    The database has the last word over a cached config: if it holds a variant the config
    does not know, or refuses to store a variant the config chose (not that experiment's),
    the config is compiled again from the database and the request decided again with it.

    `handed` is what `decide_if_read` read for this very request and did not answer (the
    hot path's, decide/hot_path.py): it is used instead of reading again, and counted as
    the memory's miss it was.
    """
    sent = attributes or {}

    known = memory.known_units() if len(unit_keys) == 1 else None
    generation = None
    if handed is not None and handed.of(credential, unit_keys):
        if known is not None:
            metrics.known_miss.inc()
        if handed.error is not None:
            raise handed.error
        state, units, generation = handed.state, handed.units, handed.generation
    else:
        if known is not None:
            served = _from_memory(
                known,
                credential,
                unit_keys[0],
                experiments,
                step,
                include_paused,
                sent,
                config_cache.get_config,
            )
            if served is not None:
                metrics.known_hit.inc()
                return served
            metrics.known_miss.inc()
            generation = known.generation()
        state, units = store.read_units(credential, unit_keys)
    config = config_cache.get_config(state.product_id, state.config_version)

    def plan_with(config: ProductConfig) -> _Plan:
        return _plan(config, state, units, unit_keys, experiments, step, include_paused, sent)

    plan = plan_with(config)
    if known is not None and generation is not None:
        if units and policy.answerable(plan):
            known.put(credential, unit_keys[0], state, units[unit_keys[0]], generation)
        elif plan.writes:
            # What it stores is learnt from its notification (decide.memory.listener):
            # the key must be held for that.
            known.put_key(credential, state, generation)
    try:
        if plan.config_disagrees:
            raise _ConfigDisagrees()
        stored = _store(state.product_id, units, plan.writes, sent)
    except _ConfigDisagrees:
        config = config_cache.get_config(state.product_id, state.config_version, distrusted=config)
        plan = plan_with(config)
        try:
            stored = _store(state.product_id, units, plan.writes, sent)
        except _ConfigDisagrees:
            raise ServiceUnavailable("the decision could not be stored; retry") from None
    return Decided(config, _answers(plan, stored))


def decide_if_read(
    credential: ClientCredential,
    unit_key: str,
    *,
    experiments: Sequence[str] | None = None,
    step: str | None = None,
    attributes: Mapping[str, Mapping[str, object]] | None = None,
) -> Decided | Handed:
    """One unit's decision when it is a read (decide.memory.policy): from this worker's
    memory, else from the one read `decide` makes (decide.store.read_units), remembered as
    `decide` remembers it. Otherwise what was read, or the error the read raised
    (InvalidClientKey, DatabaseError), for `decide` to answer with (`handed`): a decision
    that would store something, tests a condition or meets a stored variant the config
    does not know. The memory's miss is counted by whoever answers it."""
    sent = attributes or {}
    known = memory.known_units()
    generation = None
    if known is not None:
        served = _from_memory(
            known,
            credential,
            unit_key,
            experiments,
            step,
            False,
            sent,
            config_cache.get_config,
        )
        if served is not None:
            metrics.known_hit.inc()
            return served
        generation = known.generation()
    unit_keys = (unit_key,)
    try:
        state, units = store.read_units(credential, unit_keys)
        config = config_cache.get_config(state.product_id, state.config_version)
    except (InvalidClientKey, DatabaseError) as error:
        return Handed(credential, unit_key, generation, error=error)
    plan = _plan(config, state, units, unit_keys, experiments, step, False, sent)
    if not policy.answerable(plan):
        return Handed(credential, unit_key, generation, state, units)
    if known is not None:
        metrics.known_miss.inc()
        if units:
            known.put(credential, unit_key, state, units[unit_key], generation)
    return Decided(config, _answers(plan, {}))


def _from_memory(
    known: memory.KnownUnits,
    credential: ClientCredential,
    unit_key: str,
    experiments: Sequence[str] | None,
    step: str | None,
    include_paused: bool,
    sent: Mapping[str, Mapping[str, object]],
    config_of: Callable[[int, int], ProductConfig | None],
) -> Decided | None:
    """The decision from a known unit's entry, if every answer is a read (else None): the
    key is checked by the memory before the unit is looked up (decide.memory)."""
    remembered = known.get(credential, unit_key)
    if remembered is None:
        return None
    state = remembered.state
    config = config_of(state.product_id, state.config_version)
    if config is None:
        return None
    unit_keys = (unit_key,)
    units = {unit_key: remembered.unit}
    try:
        plan = _plan(config, state, units, unit_keys, experiments, step, include_paused, sent)
    except policy.AttributesNotKept:
        return None
    if not policy.answerable(plan):
        return None
    return Decided(config, _answers(plan, {}), remembered)


def _plan(
    config: ProductConfig,
    state: store.ProductState,
    units: dict[str, store.UnitRow],
    unit_keys: Sequence[str],
    experiments: Sequence[str] | None,
    step: str | None,
    include_paused: bool,
    sent: Mapping[str, Mapping[str, object]],
) -> _Plan:
    """Pure but for the clock: the engine's decision for every (unit, selected experiment).

    A unit's effective attributes (stored, overlaid key by key with the ones sent) are only
    assembled when a condition is tested: an untargeted decision, or a unit whose stored
    assignments answer, never decodes stored attributes.
    """
    selected = _select(config, experiments, step, include_paused)
    product_enabled = state.status == Status.ENABLED
    # Randomized by lot (the experiment, or its design), an experiment reads the lot from the
    # attributes, like a condition.
    targeted = any(
        e is not None
        and (
            e.conditions
            or e.randomize_by
            or (e.design is not None and e.design.randomize_by is not None)
        )
        for _, e, _ in selected
    )
    now = time.time()
    decisions: dict[str, dict[str, Answer | _Write]] = {}
    writes: list[_Write] = []
    disagrees = False
    evaluated: list[_EffectiveAttributes] = []
    no_assignments: dict[int, store.Stored] = {}
    for unit_key in unit_keys:
        unit = units.get(unit_key)
        assignments = unit.assignments if unit is not None else no_assignments
        effective = EMPTY_ATTRIBUTES
        if targeted:
            effective = _EffectiveAttributes(unit, sent.get(unit_key, EMPTY_ATTRIBUTES))
            evaluated.append(effective)
        result: dict[str, Answer | _Write] = {}
        first_write = len(writes)
        for key, experiment, null_reason in selected:
            if experiment is None:
                result[key] = Answer(None, null_reason)
                continue
            if not product_enabled:
                result[key] = Answer(None, Reason.DISABLED)
                continue
            stored = assignments.get(experiment.id)
            stored_id = stored.variant_id if stored is not None else None
            if stored_id is not None and stored_id not in experiment.variant_keys_by_id:
                disagrees = True
            variant_id, source = decide_one(experiment, unit_key, stored_id, effective, now)
            if source == Reason.STORED:
                variant_key = experiment.variant_keys_by_id[variant_id]
                result[key] = Answer(variant_key, reason_of_stored(stored.source))
            elif variant_id is None:
                # Outside coverage (hash or rebucketed), or the schedule, layer or conditions.
                reason = Reason.OUTSIDE if source in _HASHED else source
                result[key] = Answer(None, reason)
            else:
                write = _Write(unit_key, experiment, variant_id, stored_id)
                writes.append(write)
                result[key] = write
        if config.by_design and len(writes) > first_write:
            if effective is EMPTY_ATTRIBUTES:
                effective = _EffectiveAttributes(unit, sent.get(unit_key, EMPTY_ATTRIBUTES))
                evaluated.append(effective)
            writes.extend(
                _whole_runs(config, unit_key, assignments, effective, now, writes[first_write:])
            )
        decisions[unit_key] = result
    return _Plan(decisions, writes, disagrees, any(e.used for e in evaluated))


def _whole_runs(
    config: ProductConfig,
    unit_key: str,
    assignments: Mapping[int, store.Stored],
    effective: Mapping[str, object],
    now: float,
    unit_writes: Sequence[_Write],
) -> list[_Write]:
    """The first levels of every other enabled factor of the designs a unit just got a
    first level of: a run is stored whole, in the same statement, whatever the request
    selected (docs/designs.md). They are stored, not answered."""
    planned = {w.experiment.id for w in unit_writes}
    salts = dict.fromkeys(
        w.experiment.design.salt
        for w in unit_writes
        if w.experiment.design is not None and w.old_variant_id is None
    )
    companions = []
    for salt in salts:
        for factor in config.by_design.get(salt, ()):
            if factor.id in planned or factor.id in assignments:
                continue
            variant_id, source = decide_one(factor, unit_key, None, effective, now)
            if variant_id is not None and source == Reason.HASH:
                companions.append(_Write(unit_key, factor, variant_id, None))
                planned.add(factor.id)
    return companions


def _select(
    config: ProductConfig,
    experiments: Sequence[str] | None,
    step: str | None,
    include_paused: bool,
) -> list[tuple[str, CompiledExperiment | None, Reason]]:
    """(key, experiment or None, the reason of a null answer) per selected experiment."""
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


_HASHED = (Reason.HASH, Reason.REBUCKETED)


class _EffectiveAttributes(Mapping):
    """A unit's stored attributes overlaid key by key with the ones sent, built on first use."""

    __slots__ = ("_merged", "_sent", "_unit")

    def __init__(self, unit: store.UnitRow | None, sent: Mapping[str, object]):
        self._unit = unit
        self._sent = sent
        self._merged: dict | None = None

    @property
    def used(self) -> bool:
        return self._merged is not None

    def _attributes(self) -> dict:
        if self._merged is None:
            if self._unit is not None and self._unit.raw_attributes is ATTRIBUTES_NOT_KEPT:
                raise policy.AttributesNotKept()
            self._merged = {**store.unit_attributes(self._unit), **self._sent}
        return self._merged

    def __getitem__(self, name: str):
        return self._attributes()[name]

    def get(self, name: str, default=None):
        return self._attributes().get(name, default)

    def __iter__(self):
        return iter(self._attributes())

    def __len__(self) -> int:
        return len(self._attributes())


# (unit key, experiment id) -> the answer the database now holds for a write.
_Stored = dict[tuple[str, int], Answer]


def _store(
    product_id: int,
    units: dict[str, store.UnitRow],
    writes: list[_Write],
    sent: Mapping[str, Mapping[str, object]],
) -> _Stored:
    """Store the plan's writes; the answer each one now has in the database.

    Raises _ConfigDisagrees when a write is neither stored nor found stored by another
    request: the database refused the variant the config chose.
    """
    if not writes:
        return {}
    unit_ids = {key: unit.unit_id for key, unit in units.items()}
    new = [w for w in writes if w.old_variant_id is None]
    moves = [w for w in writes if w.old_variant_id is not None]
    written: set[tuple[int, int]] = set()
    if new:
        new_unit_ids, inserted = store.insert_assignments(
            product_id=product_id,
            known_units=unit_ids,
            new=[store.NewAssignment(w.unit_key, w.experiment.id, w.variant_id) for w in new],
            new_unit_attributes={
                w.unit_key: sent[w.unit_key]
                for w in new
                if w.unit_key not in unit_ids and w.unit_key in sent
            },
        )
        unit_ids.update(new_unit_ids)
        written |= inserted
        metrics.assignments_created.inc(len(inserted))
    if moves:
        written |= _rebucket(product_id, unit_ids, moves)

    def pair(w: _Write) -> tuple[int | None, int]:
        return unit_ids.get(w.unit_key), w.experiment.id

    lost = {pair(w) for w in writes if pair(w) not in written}
    winners = store.read_assignments(lost) if lost else {}
    answers: _Stored = {}
    for w in writes:
        if pair(w) in written:
            answer = Answer(w.experiment.variant_keys_by_id[w.variant_id], w.reason)
        elif (winner := winners.get(pair(w))) is not None:
            # A concurrent request stored this pair first: its answer is the answer.
            answer = Answer(winner.variant_key, reason_of_stored(winner.source))
        else:
            raise _ConfigDisagrees()
        answers[w.unit_key, w.experiment.id] = answer
    return answers


def _rebucket(product_id: int, unit_ids: dict[str, int], moves: list[_Write]) -> set[tuple]:
    """Move units off removed variants, audited (the earlier variant kept in the trail)."""
    with transaction.atomic():
        moved = store.rebucket_assignments(
            [
                store.Rebucketing(
                    unit_ids[w.unit_key], w.experiment.id, w.old_variant_id, w.variant_id
                )
                for w in moves
            ]
        )
        assignments_rebucketed_audit(
            product_id=product_id,
            actor=REBUCKETING_ACTOR,
            moves=[
                (
                    w.experiment.key,
                    w.unit_key,
                    w.experiment.variant_keys_by_id.get(w.old_variant_id, ""),
                    w.experiment.variant_keys_by_id[w.variant_id],
                )
                for w in moves
                if (unit_ids[w.unit_key], w.experiment.id) in moved
            ],
        )
    metrics.assignments_rebucketed.inc(len(moved))
    return moved


def _answers(plan: _Plan, stored: _Stored) -> dict[str, dict[str, Answer]]:
    return {
        unit_key: {
            key: (
                decision
                if isinstance(decision, Answer)
                else stored[decision.unit_key, decision.experiment.id]
            )
            for key, decision in decisions.items()
        }
        for unit_key, decisions in plan.decisions.items()
    }
