"""Pure bucketing: which variant of an experiment a unit gets.

This module is the public contract a client SDK may reproduce (see docs/decide.md):

1. ``h = murmur3_32(utf8(f"{salt}:{unit_key}"), seed=0)`` read as an unsigned integer,
   ``x = h / 2**32`` (in [0, 1)).
2. The eligible variants (enabled, weight > 0) in ascending creation order, weights
   normalised to sum 1: variant i owns ``[c_i, c_i + coverage * w_i)`` where ``c_i`` is the
   sum of the earlier normalised weights. Starts do not depend on coverage, so raising
   coverage only adds units to a variant; it never moves one.
3. ``x`` inside a range gives that variant; ``x`` in no range means the unit is outside
   coverage and gets no variant.

Stickiness (an already stored assignment wins unless its variant was removed) is applied by
:func:`decide_one`, with the targeting rules around it (docs/decide.md, "Targeting, schedules
and layers"): outside its schedule an experiment answers nothing (stored assignments kept);
a stored assignment wins; otherwise a unit outside the experiment's layer slot, or whose
effective attributes fail a condition, gets nothing and nothing is stored. Everything here
is plain Python over frozen dataclasses: no Django, no I/O.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import MappingProxyType
from typing import NamedTuple

import mmh3

from rules.designs import run_of
from rules.targeting import CompiledCondition, LayerSlot, Schedule, all_hold, attribute_text
from rules.vocabulary import Reason, Status

__all__ = [
    "CompiledExperiment",
    "Decision",
    "DesignSlot",
    "VariantRange",
    "bucket_position",
    "choose",
    "compile_experiment",
    "compile_ranges",
    "decide_one",
    "layer_position",
    "randomization_key",
]

_TWO_POW_32 = 2**32

EMPTY_ATTRIBUTES: Mapping[str, object] = MappingProxyType({})


def bucket_position(salt: str, unit_key: str) -> float:
    """Return the unit's position ``x`` in [0, 1) for an experiment's salt.

    The hashed string is ``f"{salt}:{unit_key}"`` encoded as UTF-8. A string that is not valid
    Unicode (a lone surrogate) cannot be encoded and raises ``UnicodeEncodeError``, a
    ``ValueError``.
    """
    h = mmh3.hash(f"{salt}:{unit_key}".encode(), 0, False)
    # h < 2**32, so the quotient is exact in a double and strictly below 1.
    return h / _TWO_POW_32


def layer_position(layer_salt: str, unit_key: str) -> float:
    """The unit's position ``y`` in [0, 1) in a layer: the same hash, with the layer's salt."""
    return bucket_position(layer_salt, unit_key)


@dataclass(frozen=True, slots=True)
class VariantRange:
    """Variant ``id`` owns the half-open interval ``[start, end)`` of bucket positions."""

    id: int
    key: str
    start: float
    end: float


def compile_ranges(
    variants: Sequence[tuple[int, str, float]], coverage: float
) -> tuple[VariantRange, ...]:
    """Build the bucket ranges of the eligible variants.

    ``variants`` are the eligible variants as ``(id, key, weight)`` in ascending creation
    order. Variant i gets ``[c_i, c_i + coverage * w_i)`` with normalised weights ``w_i``.

    Floating point: with raw weights ``W_i`` as doubles, their running sum ``S_i`` (plain
    double additions, left to right, ``S_0 = 0``) and total ``T = S_n``, the bounds are
    ``start = S_i / T`` and ``end = (S_i + coverage * W_i) / T``. At coverage 1 each ``end``
    is then bit-identical to the next ``start`` and the last ``end`` is exactly 1.0 (no gap
    from rounding); at any coverage the ranges never overlap and an ``end`` never shrinks as
    coverage grows, because every step is a correctly rounded, monotonic IEEE-754 operation.

    Variants whose range is empty (weight 0, or coverage 0) are omitted, so the result is
    sorted by strictly increasing ``start``. No eligible variant, or a total weight of 0,
    gives an empty tuple.

    Raises ``ValueError`` for a coverage outside [0, 1] or a weight that is negative or not
    finite.
    """
    coverage = float(coverage)
    if not 0.0 <= coverage <= 1.0:  # also refuses NaN
        raise ValueError(f"coverage must be in [0, 1], got {coverage!r}")
    weighted = [(variant_id, key, float(weight)) for variant_id, key, weight in variants]
    # Plain left-to-right additions (not math.fsum or sum(), which may compensate): the last
    # running sum must be bit-identical to the total for the last end to be exactly 1.0.
    total = 0.0
    for _id, key, weight in weighted:
        if not (weight >= 0.0 and math.isfinite(weight)):
            raise ValueError(f"weight of variant {key!r} must be finite and >= 0, got {weight!r}")
        total += weight
    if not math.isfinite(total):
        raise ValueError("the sum of the weights is not finite")
    if total == 0.0:
        return ()
    # Scale by a power of two (exact) so the largest weight lies in [0.5, 1): tiny weights
    # would otherwise make `coverage * weight` underflow into subnormals and lose coverage.
    _, exponent = math.frexp(max(weight for _, _, weight in weighted))
    weighted = [(variant_id, key, math.ldexp(w, -exponent)) for variant_id, key, w in weighted]
    total = 0.0
    for _, _, weight in weighted:
        total += weight

    ranges: list[VariantRange] = []
    running = 0.0
    for variant_id, key, weight in weighted:
        start = running / total
        end = (running + coverage * weight) / total
        if end > start:
            ranges.append(VariantRange(variant_id, key, start, end))
        running += weight
    return tuple(ranges)


_range_start = attrgetter("start")


def choose(ranges: Sequence[VariantRange], x: float) -> VariantRange | None:
    """Return the range containing ``x`` (``start <= x < end``), or None if none does.

    ``ranges`` must be sorted by start and non-overlapping, as :func:`compile_ranges` returns.
    """
    i = bisect_right(ranges, x, key=_range_start) - 1
    if i >= 0 and x < ranges[i].end:
        return ranges[i]
    return None


@dataclass(frozen=True, slots=True)
class DesignSlot:
    """The experiment is factor ``column`` of a design (docs/designs.md): a unit's run is
    ``run_of(salt, unit key or its randomize_by value, runs)`` and the factor's level in it
    the parity of ``column & (run - 1)``: 0 gives variant ``low``, 1 variant ``high``."""

    salt: str
    runs: int
    column: int
    low: int
    high: int
    randomize_by: str | None = None

    def variant(self, unit_key: str, attributes: Mapping[str, object]) -> int | None:
        value: object = unit_key
        if self.randomize_by is not None:
            value = attributes.get(self.randomize_by)
            if value is None or isinstance(value, list):
                return None
            value = attribute_text(value)
        run = run_of(self.salt, value, self.runs)
        return self.high if (self.column & (run - 1)).bit_count() & 1 else self.low


@dataclass(frozen=True, slots=True)
class CompiledExperiment:
    """An enabled experiment, ready to decide.

    ``ranges`` are the eligible variants' bucket ranges (from :func:`compile_ranges`).
    ``variant_keys_by_id`` holds every variant, whatever its status, so a stored assignment
    can always be turned into a key (and an audit trail can name a removed variant).
    ``removed_variant_ids`` are the variants no unit may be served any more.
    ``schedule``, ``layer`` and ``conditions`` are the experiment's targeting (none by default).

    Instances are immutable and hashable: the mapping is wrapped read-only and left out of
    the hash (it is still compared by ``==``).
    """

    id: int
    key: str
    salt: str
    coverage: float
    step_key: str | None
    ranges: tuple[VariantRange, ...]
    variant_keys_by_id: Mapping[int, str] = field(hash=False)
    removed_variant_ids: frozenset[int] = frozenset()
    schedule: Schedule | None = None
    layer: LayerSlot | None = None
    conditions: tuple[CompiledCondition, ...] = ()
    design: DesignSlot | None = None
    # Cluster randomization: the attribute whose value is hashed instead of the unit key.
    randomize_by: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.variant_keys_by_id, MappingProxyType):
            proxy = MappingProxyType(dict(self.variant_keys_by_id))
            object.__setattr__(self, "variant_keys_by_id", proxy)
        if not isinstance(self.removed_variant_ids, frozenset):
            object.__setattr__(self, "removed_variant_ids", frozenset(self.removed_variant_ids))
        if not isinstance(self.ranges, tuple):
            object.__setattr__(self, "ranges", tuple(self.ranges))


def compile_experiment(
    *,
    id: int,
    key: str,
    salt: str,
    coverage: float,
    step_key: str | None = None,
    variants: Iterable[tuple[int, str, str, float]],
    schedule: Schedule | None = None,
    layer: LayerSlot | None = None,
    conditions: Sequence[CompiledCondition] = (),
    design: DesignSlot | None = None,
    randomize_by: str | None = None,
) -> CompiledExperiment:
    """Compile an experiment from all its variants as ``(id, key, status, weight)``.

    ``variants`` must be in ascending creation order. Eligibility (status enabled and
    weight > 0) and the removed set are derived here, so callers only pass what they stored.
    """
    variants = tuple(variants)
    eligible = [
        (variant_id, variant_key, weight)
        for variant_id, variant_key, status, weight in variants
        if status == Status.ENABLED and weight > 0
    ]
    return CompiledExperiment(
        id=id,
        key=key,
        salt=salt,
        coverage=coverage,
        step_key=step_key,
        ranges=compile_ranges(eligible, coverage),
        variant_keys_by_id={variant_id: variant_key for variant_id, variant_key, _, _ in variants},
        removed_variant_ids=frozenset(
            variant_id for variant_id, _, status, _ in variants if status == Status.REMOVED
        ),
        schedule=schedule,
        layer=layer,
        conditions=tuple(conditions),
        design=design,
        randomize_by=randomize_by,
    )


class Decision(NamedTuple):
    """The answer for one (experiment, unit): a variant id (None = no variant) and its source.

    A caller stores the decision when ``variant_id is not None and source != Reason.STORED``.
    The reasons that answer no variant (outside coverage, schedule, layer or conditions)
    never store anything.
    """

    variant_id: int | None
    source: Reason  # Reason.STORED, Reason.HASH or Reason.REBUCKETED


def decide_one(
    experiment: CompiledExperiment,
    unit_key: str,
    stored_variant_id: int | None,
    attributes: Mapping[str, object] = EMPTY_ATTRIBUTES,
    now: float | None = None,
) -> Decision:
    """Decide one unit, in the rule order of docs/decide.md:

    0. outside its schedule (``now``, seconds since the epoch) the experiment answers
       nothing and stored assignments are kept;
    1. a stored variant wins (sticky) unless it was removed or the experiment does not know
       it: a disabled, zero-weight or out-of-coverage variant stays, whatever the layer,
       conditions or attributes are now;
    1a. a unit whose layer position is outside the experiment's slot gets nothing;
    1b. a unit whose effective ``attributes`` fail a condition gets nothing;
    2-3. otherwise the unit is hashed into the ranges; a factor of a design takes the level
       of the unit's run instead (weights and coverage ignored; docs/designs.md).

    An experiment randomized by an attribute (``randomize_by``) hashes that attribute's value
    (``randomization_key``) instead of the unit key, for the layer and the buckets; a unit
    without it (or with a list) gets nothing and nothing is stored, like a failed condition.
    """
    schedule = experiment.schedule
    if schedule is not None and not schedule.active(time.time() if now is None else now):
        return Decision(None, Reason.OFF_SCHEDULE)
    if stored_variant_id is not None:
        if (
            stored_variant_id in experiment.variant_keys_by_id
            and stored_variant_id not in experiment.removed_variant_ids
        ):
            return Decision(stored_variant_id, Reason.STORED)
        source = Reason.REBUCKETED
    else:
        source = Reason.HASH
    hashed = unit_key
    if experiment.randomize_by is not None:
        hashed = randomization_key(attributes.get(experiment.randomize_by))
        if hashed is None:
            return Decision(None, Reason.NOT_TARGETED)
    layer = experiment.layer
    if layer is not None and not layer.contains(layer_position(layer.salt, hashed)):
        return Decision(None, Reason.OUTSIDE_LAYER)
    if experiment.conditions and not all_hold(experiment.conditions, attributes):
        return Decision(None, Reason.NOT_TARGETED)
    design = experiment.design
    if design is not None:
        level = design.variant(unit_key, attributes)
        if level is None or level in experiment.removed_variant_ids:
            return Decision(None, Reason.NOT_TARGETED)
        return Decision(level, source)
    chosen = choose(experiment.ranges, bucket_position(experiment.salt, hashed))
    return Decision(chosen.id if chosen is not None else None, source)


def randomization_key(value: object) -> str | None:
    """The text hashed for a unit of an experiment randomized by an attribute whose value is
    ``value``: as conditions read it (a string as is, a number by its JSON text, a boolean
    ``true``/``false``), so a number and a string with the same text are one lot. None (no
    variant) for a missing attribute or a list."""
    if value is None or isinstance(value, list):
        return None
    text = attribute_text(value)
    return text if isinstance(text, str) else None
