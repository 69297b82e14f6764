"""The SVG endpoints' data: aggregates from the database, drawn by ``lab.analysis.plots``."""

from __future__ import annotations

from lab.analysis import plots
from lab.analysis.control_chart import chart_points, control_charts
from lab.analysis.distributions import variant_histograms
from lab.analysis.links import Plot
from lab.models import Experiment, Metric, Product, Status, Variant
from lab.selectors.experiments import experiment_get
from lab.selectors.metrics import metric_get
from lab.selectors.variants import variant_get

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
    return plots.distributions_svg(
        title=plots.with_unit(f"{experiment.key}: {metric.key}", metric.unit_of_measure),
        edges=edges,
        counts=shown,
        lower=metric.lower_limit,
        nominal=metric.nominal,
        upper=metric.upper_limit,
        unit=metric.unit_of_measure,
    )


def control_chart_picture(*, experiment: Experiment, metric: Metric, variant: Variant) -> str:
    chart = control_charts(experiment=experiment, metric=metric)["variants"].get(variant.key, {})
    values, total = chart_points(
        experiment=experiment, metric=metric, variant=variant, limit=MAX_CHART_POINTS
    )
    title = f"{experiment.key} = {variant.key}: {metric.key} (I-MR chart)"
    if total > len(values):
        title += f", latest {len(values)} of {total} points"
    return plots.control_chart_svg(
        title=title,
        values=values,
        chart=chart,
        first_index=total - len(values),
        unit=metric.unit_of_measure,
    )


def factorial_picture(report: dict, *, metric: Metric) -> str:
    return plots.interaction_svg(
        title=f"{report['metric']}: interaction of {' × '.join(report['experiments'])}",
        report=report,
        unit=metric.unit_of_measure,
    )


def effects_picture(report: dict) -> str:
    from lab.analysis.design_plot import half_normal_svg

    return half_normal_svg(
        title=f"{report['design']}: effects on {report['metric']}", report=report
    )


def plot_svg(*, product: Product, plot: Plot) -> str:
    """The picture ``plot`` names in ``product`` (the caller checked whose it is)."""
    if plot.kind == "effects":
        from lab.analysis.designs import design_analysis

        return effects_picture(
            design_analysis(product=product, design=plot.target, metric=plot.metric)
        )
    metric = metric_get(product=product, key=plot.metric)
    if plot.kind == "factorial":
        from lab.analysis.factorial import factorial_analysis

        report = factorial_analysis(
            product=product, experiments=list(plot.experiments), metric=plot.metric
        )
        return factorial_picture(report, metric=metric)
    experiment = experiment_get(product=product, key=plot.target)
    if plot.kind == "control-chart":
        variant = variant_get(experiment=experiment, key=plot.variant)
        return control_chart_picture(experiment=experiment, metric=metric, variant=variant)
    return results_picture(experiment=experiment, metric=metric)
