"""The SVG endpoints' data: aggregates from the database, drawn by ``lab.analysis.plots``."""

from __future__ import annotations

from lab.analysis import plots
from lab.analysis.control_chart import chart_points, control_charts
from lab.analysis.distributions import variant_histograms
from lab.models import Experiment, Metric, Status, Variant

# The control chart picture shows at most this many of the latest points (the statistics in
# its legend are over every point).
MAX_CHART_POINTS = 5000


def results_picture(*, experiment: Experiment, metric: Metric) -> str:
    variants = list(experiment.variants.order_by("id"))
    edges, counts = variant_histograms(experiment=experiment, metric=metric, variants=variants)
    empty = [0] * max(len(edges) - 1, 0)
    shown = {
        v.key: counts.get(v.id, empty)
        for v in variants
        if v.id in counts or v.status != Status.REMOVED
    }
    unit = f" ({metric.unit_of_measure})" if metric.unit_of_measure else ""
    return plots.distributions_svg(
        title=f"{experiment.key}: {metric.key}{unit}",
        edges=edges,
        counts=shown,
        lower=metric.lower_limit,
        nominal=metric.nominal,
        upper=metric.upper_limit,
    )


def control_chart_picture(*, experiment: Experiment, metric: Metric, variant: Variant) -> str:
    chart = control_charts(experiment=experiment, metric=metric)["variants"].get(variant.key, {})
    values, total = chart_points(
        experiment=experiment, metric=metric, variant=variant, limit=MAX_CHART_POINTS
    )
    title = f"{experiment.key} = {variant.key}: {metric.key} (I chart)"
    if total > len(values):
        title += f", latest {len(values)} of {total} points"
    return plots.control_chart_svg(
        title=title, values=values, chart=chart, first_index=total - len(values)
    )


def factorial_picture(report: dict) -> str:
    return plots.interaction_svg(
        title=f"{report['metric']}: interaction of {' × '.join(report['experiments'])}",
        report=report,
    )
