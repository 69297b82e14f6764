"""Characterization analyses beyond the per-experiment report: the factorial ANOVA across
experiments, control charts, the SVG plots and the CSV export (docs/results.md §11–15)."""

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from ninja import Path, Query, Router, Schema
from pydantic import Field

from admin_api.schemas import REPLICA_LAG_FIELD, KeyList
from lab.analysis import control_chart, export, factorial
from lab.analysis.factorial import MAX_FACTORS
from lab.analysis.links import Plot, plot_link_sign
from lab.replica import LAG_HEADER, analysis_reads, choose_analysis_read, streamed_from
from lab.selectors.experiments import experiment_get
from lab.selectors.metrics import metric_get
from lab.selectors.products import product_get

router = Router(tags=["analysis"])

PLOT_URL_FIELD = Field(
    description="A signed link to this answer's picture (SVG) that opens without the bearer "
    "token, for PLOT_LINK_MAX_AGE_SECONDS (default 3600 s): for a browser or an `<img src>`"
)


def plot_url(request, plot: Plot) -> str:
    """The absolute signed link to ``plot``, made with the request's API token."""
    signed = plot_link_sign(token_prefix=request.api_token_prefix, plot=plot)
    return request.build_absolute_uri(reverse("admin:open_plot", kwargs={"link": signed}))


class CellOut(Schema):
    variants: dict[str, str] = Field(description="The variant of each experiment in this cell")
    n: int
    mean: float | None
    std: float | None
    yield_: float | None = Field(alias="yield")


class AnovaRowOut(Schema):
    source: str = Field(description="An experiment key, an interaction `A:B`, `residual`, `total`")
    df: int
    sum_sq: float | None
    mean_sq: float | None = None
    f: float | None = None
    p_value: float | None = None


class FactorialOut(Schema):
    replica_lag_seconds: float = REPLICA_LAG_FIELD
    experiments: list[str]
    metric: str
    n: int
    sum_sq_type: int = Field(3, description="Always 3: Type III (adjusted) sums of squares")
    cells: list[CellOut]
    anova: list[AnovaRowOut] | None = Field(
        description="Null when a cell is empty (see `anova_note`)"
    )
    anova_note: str | None
    r_squared: float | None
    residual_std: float | None
    warning: str | None = Field(
        default=None,
        description="Present when an experiment is randomized by lot: names them (the F tests "
        "treat units as independent)",
    )
    plot_url: str = PLOT_URL_FIELD


class FactorialQuery(Schema):
    experiments: KeyList(min_items=1, max_items=MAX_FACTORS, what="The experiments (factors)")
    metric: str = Field(max_length=200, description="The metric key")


@router.get(
    "/analysis/factorial",
    response=FactorialOut,
    by_alias=True,
    exclude_unset=True,
    summary="Type III ANOVA of a metric across 1 to 3 experiments that share units",
)
def get_factorial(request, product: Path[str], query: Query[FactorialQuery]):
    product_obj = product_get(user=request.auth, key=product)
    with analysis_reads() as read:
        report = factorial.factorial_analysis(
            product=product_obj, experiments=query.experiments, metric=query.metric
        )
    plot = Plot("factorial", product, query.metric, experiments=tuple(query.experiments))
    return {
        **report,
        "replica_lag_seconds": read.replica_lag_seconds,
        "plot_url": plot_url(request, plot),
    }


# --- control charts --------------------------------------------------------------------------


class ChartOut(Schema):
    n: int
    center: float | None
    mr_bar: float | None
    ucl: float | None
    lcl: float | None
    mr_ucl: float | None
    beyond_limits: int | None
    longest_run: int | None
    stable: bool | None
    plot_url: str = PLOT_URL_FIELD


class ControlChartOut(Schema):
    experiment: str
    metric: str
    variants: dict[str, ChartOut]
    replica_lag_seconds: float = REPLICA_LAG_FIELD


class MetricQuery(Schema):
    metric: str = Field(max_length=200, description="The metric key")


class ChartSvgQuery(MetricQuery):
    variant: str = Field(max_length=200, description="The variant key")


def _experiment_and_metric(request, product: str, experiment: str, metric: str):
    product_obj = product_get(user=request.auth, key=product)
    experiment_obj = experiment_get(product=product_obj, key=experiment)
    return product_obj, experiment_obj, metric_get(product=product_obj, key=metric)


@router.get(
    "/experiments/{experiment}/control-chart",
    response=ControlChartOut,
    summary="Individuals and moving-range control chart of a metric, per variant",
)
def get_control_chart(
    request, product: Path[str], experiment: Path[str], query: Query[MetricQuery]
):
    _, experiment_obj, metric_obj = _experiment_and_metric(
        request, product, experiment, query.metric
    )
    with analysis_reads() as read:
        charts = control_chart.control_charts(experiment=experiment_obj, metric=metric_obj)
    for variant, chart in charts["variants"].items():
        plot = Plot("control-chart", product, query.metric, target=experiment, variant=variant)
        chart["plot_url"] = plot_url(request, plot)
    return {**charts, "replica_lag_seconds": read.replica_lag_seconds}


# --- plots -----------------------------------------------------------------------------------

# Each media type names its schema: Swagger UI fails to render the whole page on an empty one.
SVG = {
    "responses": {
        200: {
            "description": "An SVG picture",
            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
        }
    }
}


def svg_response(request, plot: Plot, user=None) -> HttpResponse:
    """The picture ``plot`` names, drawn for ``user`` (default: the request's)."""
    # matplotlib is imported on the first picture, not when the API loads: a worker that
    # only decides or reports never pays for it.
    from lab.analysis.pictures import plot_svg

    # Whose product it is, on the primary; the picture's reads, where analyses read.
    product = product_get(user=user or request.auth, key=plot.product)
    with analysis_reads() as read:
        picture = plot_svg(product=product, plot=plot)
    response = HttpResponse(picture, content_type="image/svg+xml")
    response[LAG_HEADER] = str(read.replica_lag_seconds)
    return response


@router.get(
    "/experiments/{experiment}/results.svg",
    summary="Per-variant distributions of a metric against its spec limits (SVG)",
    openapi_extra=SVG,
)
def get_results_svg(request, product: Path[str], experiment: Path[str], query: Query[MetricQuery]):
    return svg_response(request, Plot("results", product, query.metric, target=experiment))


@router.get(
    "/experiments/{experiment}/control-chart.svg",
    summary="Individuals and moving-range chart of one variant, out-of-limit points marked (SVG)",
    openapi_extra=SVG,
)
def get_control_chart_svg(
    request, product: Path[str], experiment: Path[str], query: Query[ChartSvgQuery]
):
    plot = Plot("control-chart", product, query.metric, target=experiment, variant=query.variant)
    return svg_response(request, plot)


@router.get(
    "/analysis/factorial.svg",
    summary="Interaction plot of a factorial analysis, with 95 % intervals of the means (SVG)",
    openapi_extra=SVG,
)
def get_factorial_svg(request, product: Path[str], query: Query[FactorialQuery]):
    plot = Plot("factorial", product, query.metric, experiments=tuple(query.experiments))
    return svg_response(request, plot)


# --- export ----------------------------------------------------------------------------------


# Few enough keys that both lists fit in the request line (docs/contract.md, "4.1 Limits").
EXPORT_LIST_KEYS = 20


class ExportQuery(Schema):
    experiments: KeyList(
        min_items=0, max_items=EXPORT_LIST_KEYS, what="The experiments (default: all)"
    ) = None
    metrics: KeyList(min_items=0, max_items=EXPORT_LIST_KEYS, what="The metrics (default: all)") = (
        None
    )


@router.get(
    "/export.csv",
    summary="One row per unit: its variant in each experiment and its value of each metric",
    openapi_extra={
        "responses": {
            200: {
                "description": "CSV, streamed",
                "content": {"text/csv": {"schema": {"type": "string"}}},
            }
        }
    },
)
def get_export(request, product: Path[str], query: Query[ExportQuery]):
    product_obj = product_get(user=request.auth, key=product)
    experiments, metrics = export.export_columns(
        product=product_obj, experiments=query.experiments, metrics=query.metrics
    )
    read = choose_analysis_read()
    response = StreamingHttpResponse(
        streamed_from(
            read, export.csv_stream(product=product_obj, experiments=experiments, metrics=metrics)
        ),
        content_type="text/csv; charset=utf-8",
    )
    response[LAG_HEADER] = str(read.replica_lag_seconds)
    response["Content-Disposition"] = f'attachment; filename="{product_obj.key}.csv"'
    return response
