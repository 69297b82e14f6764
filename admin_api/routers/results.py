"""The characterization report of an experiment (docs/contract.md#71-the-results-report;
docs/results.md explains it)."""

from typing import Literal

from ninja import Path, Query, Router, Schema
from pydantic import Field

from admin_api.routers.analysis import PLOT_URL_FIELD, plot_url
from admin_api.schemas import REPLICA_LAG_FIELD
from lab.analysis import results as analysis
from lab.analysis.links import Plot
from lab.replica import analysis_reads
from lab.selectors import experiments as experiment_selectors
from lab.selectors import products as product_selectors

router = Router(tags=["results"])

Correction = Literal["holm", "bh", "bonferroni", "none"]


class SrmOut(Schema):
    chi2: float | None
    df: int | None
    p_value: float | None
    counts: dict[str, int]
    expected: dict[str, float]


class AdjustedOut(Schema):
    n: int | None = Field(description="Units of the two arms measured on both metrics")
    diff: float | None = Field(description="Lin's adjusted difference (b)")
    se: float | None
    t: float | None
    df: float | None
    p_value: float | None
    p_value_adjusted: float | None = Field(
        description="Adjusted among every covariate-adjusted p-value of the report"
    )
    ci_low: float | None
    ci_high: float | None
    variance_reduction: float | None = Field(
        description="1 − se²/se_unadjusted², the same estimator without the covariate"
    )


class VsControlOut(Schema):
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    t: float | None
    df: float | None
    p_value: float | None
    p_value_adjusted: float | None = Field(
        description="`p_value` adjusted for multiple comparisons among every Welch p-value of "
        "the report (see `correction`)"
    )
    yield_diff: float | None
    yield_ci_low: float | None
    yield_ci_high: float | None
    yield_p_value: float | None
    yield_p_value_adjusted: float | None = Field(
        description="`yield_p_value` adjusted among every yield p-value of the report"
    )
    icc: float | None = Field(
        default=None,
        description="Experiments randomized by lot: the intraclass correlation of the lots "
        "(ANOVA estimator, Donner & Klar), truncated at 0",
    )
    design_effect: float | None = Field(
        default=None, description="Experiments randomized by lot: 1 + (m0 − 1)·icc"
    )
    adjusted: AdjustedOut | None = Field(
        default=None, description="With `?covariate=`: the covariate-adjusted comparison"
    )


class VariantResultOut(Schema):
    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    yield_: float | None = Field(alias="yield")
    cp: float | None
    cpk: float | None
    cp_ci_low: float | None
    cp_ci_high: float | None
    cpk_ci_low: float | None
    cpk_ci_high: float | None
    clusters: int | None = Field(
        default=None,
        description="Experiments randomized by lot: distinct lots among the measured units "
        "(a unit without the attribute is a lot of its own)",
    )
    # Absent on the control itself: it is what the others are compared with.
    vs_control: VsControlOut | None = None


class MetricResultOut(Schema):
    metric: str
    lower_limit: float | None
    nominal: float | None
    upper_limit: float | None
    unit_of_measure: str
    variants: dict[str, VariantResultOut]
    plot_url: str = PLOT_URL_FIELD


class UnitCountsOut(Schema):
    eligible: int = Field(
        description="Units the experiment admitted and hashed into a variant (source hash or "
        "rebucketed): what the sample-ratio check counts."
    )
    assigned: int = Field(description="Units with an assignment, forced ones included.")
    measured: int = Field(description="Assigned units with a measurement of a metric.")


class ResultsOut(Schema):
    experiment: str
    control: str | None
    control_reason: Literal["is_control", "oldest"] | None = Field(
        description="`is_control`: the variant marked as control; `oldest`: none is marked "
        "(or the marked one is removed), so the oldest variant that is not removed is the control"
    )
    correction: Correction = Field(
        description="How the `*_adjusted` p-values are corrected for multiple comparisons"
    )
    randomized_by: str | None = Field(
        description="The unit attribute the experiment randomizes by (null: units)"
    )
    inference: Literal["welch", "cluster"] = Field(
        description="`cluster`: lots are the independent units (CR1, df = G − 1); "
        "`welch`: units are"
    )
    covariate: str | None = Field(
        default=None, description="The covariate metric of `?covariate=`, when given"
    )
    srm: SrmOut
    units: UnitCountsOut
    metrics: list[MetricResultOut]
    replica_lag_seconds: float = REPLICA_LAG_FIELD


@router.get(
    "",
    response=ResultsOut,
    by_alias=True,
    exclude_unset=True,
    summary="Per-variant statistics of every measured metric against its spec limits",
)
def get_results(
    request,
    product: Path[str],
    experiment: Path[str],
    correction: Query[Correction] = analysis.DEFAULT_CORRECTION,
    covariate: Query[str | None] = None,
):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    experiment_obj = experiment_selectors.experiment_get(product=product_obj, key=experiment)
    with analysis_reads() as read:
        report = analysis.experiment_results(
            experiment=experiment_obj, correction=correction, covariate=covariate
        )
    for result in report["metrics"]:
        plot = Plot("results", product, result["metric"], target=experiment)
        result["plot_url"] = plot_url(request, plot)
    return {**report, "replica_lag_seconds": read.replica_lag_seconds}
