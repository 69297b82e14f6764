"""The characterization report of an experiment (docs/results.md).

The database aggregates; Python only combines the aggregates. A fixed number of statements
whatever the number of units or measurements:

1. the experiment's variants (all statuses: removed ones can still hold measured units);
2. the product's live metrics (key, limits, unit of measure);
3. per (metric, variant) the moments of ``lab.analysis.moments`` (count, exact mean,
   standard deviation, min, max) and the in-spec count, over the measurements of units
   assigned in this experiment — two grouped joins (on PostgreSQL the metrics' ranges, one
   grouped join, and a second one only for the groups it cannot keep);
4. assignment counts per variant and source (the sample-ratio check and the unit counts),
   and the number of measured units — no query when one metric is measured on every
   assigned unit (its counts of step 3 say so).

Which metrics and variants appear:
- a metric appears when it is not removed and at least one unit assigned in the experiment
  has a measurement of it; metrics are ordered by key;
- under each metric, every variant that is not removed appears (``n`` = 0 when none of its
  units was measured), and a removed variant appears only when some of its units were
  measured — their values are real physical history, and the reader sees why it was removed;
  variants are in creation order.

After the blocks are built, the p-values of the whole report are adjusted for multiple
comparisons (two families: the Welch p-values and the yield p-values).
"""

from __future__ import annotations

from dataclasses import replace

from django.db.models import (
    Count,
    Exists,
    OuterRef,
    Prefetch,
    prefetch_related_objects,
)

from lab.analysis import clusters, covariates
from lab.analysis import statistics as stats
from lab.analysis.moments import Moments, grouped_moments
from lab.analysis.rows import experiment_rows
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
DEFAULT_CORRECTION = "holm"


def experiment_results(
    *, experiment: Experiment, correction: str = DEFAULT_CORRECTION, covariate: str | None = None
) -> dict:
    """The results report of `experiment` (already scoped to the caller's product); with
    ``covariate`` (a metric key) each comparison gains its covariate-adjusted ``adjusted``."""
    if correction not in stats.CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}")
    # One query for every variant; the control rule below reads the same prefetched list.
    prefetch_related_objects(
        [experiment], Prefetch("variants", queryset=Variant.objects.order_by("id"))
    )
    variants = list(experiment.variants.all())
    live = [variant for variant in variants if variant.status != Status.REMOVED]
    # The one control rule of the service: the variant marked `is_control` unless it is
    # removed, else the oldest variant that is not removed; None when all are removed.
    control = experiment_control(experiment)

    lots = experiment.randomize_by
    report = {
        "experiment": experiment.key,
        "randomized_by": lots,
        "inference": "cluster" if lots else "welch",
        "control": control.key if control else None,
        "control_reason": (
            None if control is None else CONTROL_MARKED if control.is_control else CONTROL_OLDEST
        ),
        "correction": correction,
        "metrics": [],
    }
    # The product's live metrics, by key; those with a measurement of the experiment appear.
    metrics = list(
        Metric.objects.filter(product_id=experiment.product_id)
        .exclude(status=Status.REMOVED)
        .order_by("key")
    )
    covariate_metric = (
        covariates.check_covariate(experiment, metrics, covariate) if covariate else None
    )
    if covariate_metric is not None:
        report["covariate"] = covariate_metric.key
    moments = _moments(experiment, metrics)
    summaries = {key: summary_of(m, in_spec=m.sums["in_spec"]) for key, m in moments.items()}
    by_metric: dict[int, dict[int, stats.Summary]] = {}
    for (metric_id, variant_id), summary in summaries.items():
        by_metric.setdefault(metric_id, {})[variant_id] = summary
    # The metric measured on the most units, and how many (a unit has one measurement per
    # metric).
    totals = {m: sum(s.n for s in by_variant.values()) for m, by_variant in by_metric.items()}
    widest = max(totals, key=totals.__getitem__, default=None)
    report["srm"], report["units"] = _srm_and_units(
        experiment,
        live,
        [metric.id for metric in metrics],
        totals.get(widest, 0),
        {v: moments[(widest, v)] for v in by_metric[widest]} if widest is not None else {},
    )
    fits = None
    if covariate_metric is not None:
        shifts = {
            (metric_id, variant_id): (s.mean, summaries[(covariate_metric.id, variant_id)].mean)
            for (metric_id, variant_id), s in summaries.items()
            if metric_id != covariate_metric.id
            and s.n > 0
            and summaries.get((covariate_metric.id, variant_id), stats.Summary(n=0)).n > 0
        }
        fits = covariates.arm_fits(experiment, metrics, covariate_metric, shifts)
    for metric in metrics:
        if metric.id in by_metric:
            report["metrics"].append(
                _metric_report(
                    metric,
                    variants,
                    control,
                    by_metric[metric.id],
                    {v: moments[(metric.id, v)] for v in by_metric[metric.id]} if lots else None,
                    None if metric == covariate_metric else fits,
                    bool(lots),
                )
            )
    _adjust(report, correction)
    return report


# Assignments the hash made (docs/results.md §2, `units`): the units the
# experiment admitted (schedule, layer, conditions) and bucketed by their weights.
HASHED_SOURCES = (AssignmentSource.HASH, AssignmentSource.REBUCKETED)


def _srm_and_units(
    experiment: Experiment,
    live: list[Variant],
    metric_ids: list[int],
    covered: int,
    widest: dict[int, Moments],
) -> tuple[dict, dict]:
    """The sample-ratio check over hash-bucketed units only (a forced unit is an operator's
    choice, not evidence about the split), and how many units were eligible, assigned and
    measured. Two aggregate queries; one when ``covered`` (the most assigned units measured
    on one metric) shows that every assigned unit is measured. By lot, a third counts the
    distinct lots, unless every unit is hashed and measured: then the lot cells of that
    metric's moments (``widest``, per variant id) hold every assigned unit's lot."""
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
    if covered == assigned:
        # One metric alone is measured on every assigned unit: they are all measured.
        measured = assigned
    elif metric_ids:
        # Counted from the assignments' side: a unit is measured when one of its measurements
        # is of a live metric (one lookup in the unique (metric, unit) index per assignment),
        # rather than by de-duplicating every measurement of the experiment.
        measured = (
            Assignment.objects.filter(experiment=experiment)
            .filter(
                Exists(
                    Measurement.objects.filter(
                        unit_id=OuterRef("unit_id"), metric_id__in=metric_ids
                    )
                )
            )
            .count()
        )
    else:
        measured = 0
    if experiment.randomize_by:
        # A lot is one draw: the check counts each variant's distinct hashed lots.
        if eligible == covered == assigned:
            hashed_by_id = {
                variant_id: sum(1 for label, _solo in m.cells if label is not None)
                for variant_id, m in widest.items()
            }
        else:
            hashed_by_id = clusters.lot_counts(
                experiment.id, experiment.randomize_by, list(HASHED_SOURCES)
            )
    srm = stats.srm(
        counts={variant.key: hashed_by_id.get(variant.id, 0) for variant in live},
        weights={variant.key: variant.weight for variant in live},
    )
    return srm, {"eligible": eligible, "assigned": assigned, "measured": measured}


def _moments(experiment: Experiment, metrics: list[Metric]) -> dict[tuple[int, int], Moments]:
    """Per (metric id, variant id): the moments of the measurements of the experiment's units
    on the listed metrics (the product's live ones), by the variant of each unit's
    assignment; of an experiment
    randomized by lot, from the same one pass grouped by lot as well, with each lot's sums
    as the moments' cells (``lab.analysis.clusters``)."""
    if not metrics:
        return {}
    groups = ("metric_key", "variant_key")
    if experiment.randomize_by:
        rows = clusters.lot_rows(experiment.id, metrics, experiment.randomize_by)
        return grouped_moments(rows, groups=groups, sums=("in_spec",), cells=clusters.LOT_CELLS)
    return grouped_moments(
        experiment_rows(experiment.id, metrics), groups=groups, sums=("in_spec",)
    )


def summary_of(moments, *, in_spec: int | None) -> stats.Summary:
    return stats.Summary(
        n=moments.n,
        mean=moments.mean,
        std=moments.std,
        min=moments.min,
        max=moments.max,
        in_spec=in_spec,
        mean_error=moments.mean_error,
    )


# With no control (every variant removed) each comparison is undefined: every figure null.
_NO_COMPARISON = stats.vs_control(stats.Summary(n=0), stats.Summary(n=0), has_limits=False)


def _metric_report(
    metric: Metric,
    variants: list[Variant],
    control: Variant | None,
    summaries: dict[int, stats.Summary],
    lots: dict[int, Moments] | None = None,
    fits: dict | None = None,
    by_lot: bool = False,
) -> dict:
    """One metric's block; with ``lots`` (per variant id, its moments with their lot cells)
    the comparisons are the cluster inference of ``lab.analysis.clusters``."""
    lower, upper = metric.lower_limit, metric.upper_limit
    has_limits = lower is not None or upper is not None

    def summary_of_variant(variant: Variant) -> stats.Summary:
        summary = summaries.get(variant.id) or stats.Summary(n=0, in_spec=0)
        if not has_limits:
            # The in-spec count of a metric without limits counts every value; there is
            # no spec, so there is no yield.
            summary = replace(summary, in_spec=None)
        return summary

    control_summary = summary_of_variant(control) if control is not None else None
    shown = {}
    for variant in variants:
        if variant.status == Status.REMOVED and variant.id not in summaries:
            continue
        summary = summary_of_variant(variant)
        block = stats.describe(summary, lower, upper)
        if lots is not None:
            block["clusters"] = len(_cells(lots, variant.id))
        if control is None or variant.id != control.id:
            block["vs_control"] = (
                stats.vs_control(control_summary, summary, has_limits=has_limits)
                if control_summary is not None
                else dict(_NO_COMPARISON)
            )
            if lots is not None:
                comparison = block["vs_control"]
                if control_summary is not None:
                    comparison.update(
                        clusters.cluster_vs_control(
                            _arm(control_summary, lots.get(control.id)),
                            _arm(summary, lots.get(variant.id)),
                            comparison["diff"],
                            has_limits,
                        )
                    )
                else:
                    comparison.update(icc=None, design_effect=None)
            if fits is not None:
                block["vs_control"]["adjusted"] = covariates.adjusted_comparison(
                    fits.get((metric.id, control.id)) if control is not None else None,
                    fits.get((metric.id, variant.id)),
                    by_lot,
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


def _cells(lots: dict[int, Moments], variant_id: int) -> dict:
    moments = lots.get(variant_id)
    return moments.cells or {} if moments is not None else {}


def _arm(summary: stats.Summary, moments: Moments | None) -> clusters.Arm:
    return clusters.Arm(
        n=summary.n,
        mean=summary.mean if summary.n > 0 else 0.0,
        mean_error=summary.mean_error,
        shift=moments.shift if moments is not None else 0.0,
        cells=(moments.cells or {}) if moments is not None else {},
        in_spec=summary.in_spec,
    )


def _adjust(report: dict, correction: str) -> None:
    """Adds ``p_value_adjusted`` and ``yield_p_value_adjusted`` to every comparison: each
    family (all Welch p-values of the report; all yield p-values) adjusted together."""
    comparisons = [
        block["vs_control"]
        for metric in report["metrics"]
        for block in metric["variants"].values()
        if "vs_control" in block
    ]
    for key in ("p_value", "yield_p_value"):
        adjusted = stats.adjust_p_values([c[key] for c in comparisons], correction)
        for comparison, value in zip(comparisons, adjusted, strict=True):
            comparison[f"{key}_adjusted"] = value
    # The covariate-adjusted p-values are a third family.
    blocks = [c["adjusted"] for c in comparisons if "adjusted" in c]
    adjusted = stats.adjust_p_values([b["p_value"] for b in blocks], correction)
    for block, value in zip(blocks, adjusted, strict=True):
        block["p_value_adjusted"] = value
