"""The characterization report of an experiment (DESIGN §3, docs/results.md).

The database aggregates; Python only combines the aggregates. A fixed number of queries
whatever the number of units or measurements:

1. the experiment's variants (all statuses: removed ones can still hold measured units);
2. assignment counts per variant and source (the sample-ratio check and the unit counts);
3. per (metric, variant): count, mean, population variance, min, max and the in-spec count,
   over the measurements of units assigned in this experiment — one grouped join;
4. the metrics that query found (key, limits, unit of measure).

Which metrics and variants appear:
- a metric appears when it is not removed and at least one unit assigned in the experiment
  has a measurement of it; metrics are ordered by key;
- under each metric, every variant that is not removed appears (``n`` = 0 when none of its
  units was measured), and a removed variant appears only when some of its units were
  measured — their values are real physical history, and the reader sees why it was removed;
  variants are in creation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from django.db import DataError, OperationalError, connection, transaction
from django.db.models import (
    Avg,
    Case,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    Min,
    Prefetch,
    Q,
    QuerySet,
    Value,
    Variance,
    When,
    prefetch_related_objects,
)
from django.db.models.functions import Abs

from lab import stats
from lab.models import (
    Assignment,
    AssignmentSource,
    Experiment,
    Measurement,
    Metric,
    Status,
    Variant,
)
from lab.selectors.experiments import experiment_control

CONTROL_MARKED = "is_control"
CONTROL_OLDEST = "oldest"

# Used only when an aggregate over extreme values (|value| above ~1e150) overflows a double
# inside the database: each such (metric, variant) group is then aggregated on its values
# scaled by an exact power of two that brings its largest value to at most 2**_SAFE_EXPONENT,
# and scaled back. Sums of up to 2**50 squares of such values stay finite, and one scale per
# group keeps every value's relative precision.
_SAFE_EXPONENT = 480


@dataclass(frozen=True)
class _Aggregate:
    metric_id: int
    variant_id: int
    summary: stats.Summary


def experiment_results(*, experiment: Experiment) -> dict:
    """The report of DESIGN §3 for `experiment` (already scoped to the caller's product)."""
    # One query for every variant; the control rule below reads the same prefetched list.
    prefetch_related_objects(
        [experiment], Prefetch("variants", queryset=Variant.objects.order_by("id"))
    )
    variants = list(experiment.variants.all())
    live = [variant for variant in variants if variant.status != Status.REMOVED]
    # The one control rule of the service: the variant marked `is_control` unless it is
    # removed, else the oldest variant that is not removed; None when all are removed.
    control = experiment_control(experiment)

    report = {
        "experiment": experiment.key,
        "control": control.key if control else None,
        "control_reason": (
            None if control is None else CONTROL_MARKED if control.is_control else CONTROL_OLDEST
        ),
        "metrics": [],
    }
    srm, report["units"] = _srm_and_units(experiment, live)
    report["srm"] = srm

    aggregates = _measurement_aggregates(experiment)
    if not aggregates:
        return report
    metrics = Metric.objects.filter(id__in={a.metric_id for a in aggregates}).order_by("key")
    by_metric: dict[int, dict[int, stats.Summary]] = {}
    for aggregate in aggregates:
        by_metric.setdefault(aggregate.metric_id, {})[aggregate.variant_id] = aggregate.summary
    for metric in metrics:
        report["metrics"].append(
            _metric_report(metric, variants, control, by_metric.get(metric.id, {}))
        )
    return report


# Assignments the hash made (docs/results.md, "Eligible, assigned, measured"): the units the
# experiment admitted (schedule, layer, conditions) and bucketed by their weights.
HASHED_SOURCES = (AssignmentSource.HASH, AssignmentSource.REBUCKETED)


def _srm_and_units(experiment: Experiment, live: list[Variant]) -> tuple[dict, dict]:
    """The sample-ratio check over hash-bucketed units only (a forced unit is an operator's
    choice, not evidence about the split), and how many units were eligible, assigned and
    measured. Two aggregate queries."""
    hashed_by_id: dict[int, int] = {}
    assigned = eligible = 0
    rows = (
        Assignment.objects.filter(experiment=experiment)
        .values_list("variant_id", "source")
        .annotate(n=Count("id"))
        .order_by()
    )
    for variant_id, source, n in rows:
        assigned += n
        if source in HASHED_SOURCES:
            eligible += n
            hashed_by_id[variant_id] = hashed_by_id.get(variant_id, 0) + n
    measured = (
        Measurement.objects.filter(
            unit__assignments__experiment=experiment, metric__product_id=experiment.product_id
        )
        .exclude(metric__status=Status.REMOVED)
        .values("unit_id")
        .distinct()
        .count()
    )
    srm = stats.srm(
        counts={variant.key: hashed_by_id.get(variant.id, 0) for variant in live},
        weights={variant.key: variant.weight for variant in live},
    )
    return srm, {"eligible": eligible, "assigned": assigned, "measured": measured}


def _in_spec() -> Q:
    """lower ≤ value ≤ upper, closed; a missing limit is unbounded."""
    above_lower = Q(metric__lower_limit__isnull=True) | Q(value__gte=F("metric__lower_limit"))
    below_upper = Q(metric__upper_limit__isnull=True) | Q(value__lte=F("metric__upper_limit"))
    return above_lower & below_upper


def _measurement_aggregates(experiment: Experiment) -> list[_Aggregate]:
    try:
        # A savepoint, so that an overflow inside the database leaves the surrounding
        # transaction (if any) usable for the retry.
        with transaction.atomic():
            return _aggregate_query(experiment, scales={})
    except (DataError, OperationalError) as exc:
        if not _is_overflow(exc):
            raise  # a timeout or an unavailable database is not retried
        return _aggregate_query(experiment, scales=_overflow_scales(experiment))


def _is_overflow(exc: Exception) -> bool:
    """PostgreSQL refuses to let a float8 sum overflow ("value out of range": a DataError);
    SQLite's exact variance (Python's statistics module, registered by Django) fails to
    convert a result beyond the float range back, which SQLite reports as an error of the
    aggregate's finalize step."""
    if isinstance(exc, DataError):
        return True
    return connection.vendor == "sqlite" and "finalize" in str(exc)


def _measured(experiment: Experiment) -> QuerySet:
    """The measurements of the experiment's units on the product's live metrics, with the
    variant of each unit as `variant`, grouped by (metric, variant)."""
    return (
        Measurement.objects.filter(
            unit__assignments__experiment=experiment,
            metric__product_id=experiment.product_id,
        )
        .exclude(metric__status=Status.REMOVED)
        .values("metric_id", variant=F("unit__assignments__variant_id"))
        .order_by()
    )


def _overflow_scales(experiment: Experiment) -> dict[tuple[int, int], int]:
    """For each group whose largest |value| exceeds 2**_SAFE_EXPONENT, the power of two to
    divide its values by."""
    scales = {}
    for row in _measured(experiment).annotate(biggest=Max(Abs("value"))):
        exponent = math.frexp(row["biggest"])[1] - _SAFE_EXPONENT
        if exponent > 0:
            scales[(row["metric_id"], row["variant"])] = exponent
    return scales


def _aggregate_query(
    experiment: Experiment, *, scales: dict[tuple[int, int], int]
) -> list[_Aggregate]:
    value = F("value")
    if scales:
        factor = Case(
            *(
                When(metric_id=metric_id, variant=variant_id, then=Value(2.0**-exponent))
                for (metric_id, variant_id), exponent in scales.items()
            ),
            default=Value(1.0),
            output_field=FloatField(),
        )
        value = ExpressionWrapper(F("value") * factor, output_field=FloatField())
    rows = _measured(experiment).annotate(
        n=Count("id"),
        mean=Avg(value),
        # Population variance: defined for n = 1, so no group makes the database (or
        # SQLite's emulation through the statistics module) raise; the sample variance
        # is derived below.
        variance=Variance(value, sample=False),
        low=Min("value"),
        high=Max("value"),
        in_spec=Count("id", filter=_in_spec()),
    )
    aggregates = []
    for row in rows:
        n = row["n"]
        scale = 2.0 ** scales.get((row["metric_id"], row["variant"]), 0)
        # Scaling back overflows to infinity (never an exception), which the statistics
        # read as undefined.
        mean = row["mean"] * scale if row["mean"] is not None else None
        variance = None
        if n >= 2 and row["variance"] is not None:
            variance = row["variance"] * n / (n - 1) * scale * scale
        aggregates.append(
            _Aggregate(
                metric_id=row["metric_id"],
                variant_id=row["variant"],
                summary=stats.Summary(
                    n=n,
                    mean=mean,
                    variance=variance,
                    min=row["low"],
                    max=row["high"],
                    in_spec=row["in_spec"],
                ),
            )
        )
    return aggregates


# With no control (every variant removed) each comparison is undefined: every figure null.
_NO_COMPARISON = stats.vs_control(stats.Summary(n=0), stats.Summary(n=0), has_limits=False)


def _metric_report(
    metric: Metric,
    variants: list[Variant],
    control: Variant | None,
    summaries: dict[int, stats.Summary],
) -> dict:
    lower, upper = metric.lower_limit, metric.upper_limit
    has_limits = lower is not None or upper is not None

    def summary_of(variant: Variant) -> stats.Summary:
        summary = summaries.get(variant.id) or stats.Summary(n=0, in_spec=0)
        if not has_limits:
            # The in-spec count of a metric without limits counts every value; there is
            # no spec, so there is no yield.
            summary = replace(summary, in_spec=None)
        return summary

    control_summary = summary_of(control) if control is not None else None
    shown = {}
    for variant in variants:
        if variant.status == Status.REMOVED and variant.id not in summaries:
            continue
        summary = summary_of(variant)
        block = stats.describe(summary, lower, upper)
        if control is None or variant.id != control.id:
            block["vs_control"] = (
                stats.vs_control(control_summary, summary, has_limits=has_limits)
                if control_summary is not None
                else dict(_NO_COMPARISON)
            )
        shown[variant.key] = block
    return {
        "metric": metric.key,
        "lower_limit": lower,
        "nominal": metric.nominal,
        "upper_limit": upper,
        "unit_of_measure": metric.unit_of_measure,
        "variants": shown,
    }
