"""Characterization analyses beyond the per-experiment report: the factorial ANOVA across
experiments, control charts, the SVG plots and the CSV export (docs/results.md §11–15)."""

from django.http import HttpResponse, StreamingHttpResponse
from ninja import Path, Query, Router, Schema
from pydantic import Field

from admin_api.schemas import REPLICA_LAG_FIELD
from lab.analysis import control_chart, export, factorial
from lab.replica import LAG_HEADER, analysis_reads, choose_analysis_read, streamed_from
from lab.selectors.experiments import experiment_get
from lab.selectors.metrics import metric_get
from lab.selectors.products import product_get
from lab.selectors.variants import variant_get

router = Router(tags=["analysis"])


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


# Keys separated by commas, spaces allowed around each (the analysis strips them); nothing
# that takes more than 3 bytes percent-encoded, so the lists fit in the request line.
_KEY = "[a-z0-9][a-z0-9_.-]{0,63}"
_KEY_LIST = rf"^ *({_KEY} *(, *{_KEY} *)*)?$"


class FactorialQuery(Schema):
    experiments: str = Field(
        max_length=300,
        pattern=rf"^ *{_KEY} *(, *{_KEY} *){{0,2}}$",
        description="1 to 3 experiment keys separated by commas: `A,B[,C]`",
    )
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
    return {**report, "replica_lag_seconds": read.replica_lag_seconds}


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


def _svg_response(text: str, lag_seconds: float) -> HttpResponse:
    response = HttpResponse(text, content_type="image/svg+xml")
    response[LAG_HEADER] = str(lag_seconds)
    return response


def _pictures():
    # matplotlib is imported on the first picture, not when the API loads: a worker that
    # only decides or reports never pays for it.
    from lab.analysis import pictures

    return pictures


@router.get(
    "/experiments/{experiment}/results.svg",
    summary="Per-variant distributions of a metric against its spec limits (SVG)",
    openapi_extra=SVG,
)
def get_results_svg(request, product: Path[str], experiment: Path[str], query: Query[MetricQuery]):
    _, experiment_obj, metric_obj = _experiment_and_metric(
        request, product, experiment, query.metric
    )
    with analysis_reads() as read:
        picture = _pictures().results_picture(experiment=experiment_obj, metric=metric_obj)
    return _svg_response(picture, read.replica_lag_seconds)


@router.get(
    "/experiments/{experiment}/control-chart.svg",
    summary="Individuals control chart of one variant, out-of-limit points marked (SVG)",
    openapi_extra=SVG,
)
def get_control_chart_svg(
    request, product: Path[str], experiment: Path[str], query: Query[ChartSvgQuery]
):
    _, experiment_obj, metric_obj = _experiment_and_metric(
        request, product, experiment, query.metric
    )
    variant_obj = variant_get(experiment=experiment_obj, key=query.variant)
    with analysis_reads() as read:
        picture = _pictures().control_chart_picture(
            experiment=experiment_obj, metric=metric_obj, variant=variant_obj
        )
    return _svg_response(picture, read.replica_lag_seconds)


@router.get(
    "/analysis/factorial.svg",
    summary="Interaction plot of a factorial analysis (SVG)",
    openapi_extra=SVG,
)
def get_factorial_svg(request, product: Path[str], query: Query[FactorialQuery]):
    product_obj = product_get(user=request.auth, key=product)
    with analysis_reads() as read:
        report = factorial.factorial_analysis(
            product=product_obj, experiments=query.experiments, metric=query.metric
        )
    return _svg_response(_pictures().factorial_picture(report), read.replica_lag_seconds)


# --- export ----------------------------------------------------------------------------------


class ExportQuery(Schema):
    # Short enough that both lists fit in the request line (docs/contract.md, "4.1 Limits").
    experiments: str | None = Field(
        None,
        max_length=1300,
        pattern=_KEY_LIST,
        description="Experiment keys separated by commas (default: all)",
    )
    metrics: str | None = Field(
        None,
        max_length=1300,
        pattern=_KEY_LIST,
        description="Metric keys separated by commas (default: all)",
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
