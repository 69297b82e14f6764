"""Designed experiments (docs/designs.md): fractional factorials whose factors are
experiments, their runs, and their analysis."""

from datetime import datetime
from typing import Annotated

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field, Strict, StrictInt

from admin_api.pagination import Pagination
from admin_api.routers.analysis import PLOT_URL_FIELD, SVG, plot_url, svg_response
from admin_api.schemas import REPLICA_LAG_FIELD, StatusFilter, StatusValue
from lab.analysis.links import Plot
from lab.replica import analysis_reads
from lab.schema_types import InputSchema, IntegralFloatAsInt, Key, Name
from lab.selectors import designs as selectors
from lab.selectors import products as product_selectors
from lab.services import designs as services

router = Router(tags=["designs"])

AttributeName = Annotated[str, Strict(), Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]


class DesignIn(InputSchema):
    key: Key
    name: Name = ""
    factors: list[Key] = Field(
        min_length=2,
        max_length=15,
        description="2 to 15 experiments of the product, lettered A, B, C, … (I skipped) in "
        "this order; each with exactly two variants that are not removed, in no layer and no "
        "other design.",
    )
    runs: Annotated[StrictInt, Field(ge=4, le=128), IntegralFloatAsInt] = Field(
        description="A power of two with factors + 1 <= runs <= min(2^factors, 128)."
    )
    randomize_by: AttributeName | None = Field(
        None, description="A unit attribute (e.g. lot) whose value is hashed instead of the unit."
    )


class RunOut(Schema):
    run: int
    levels: dict[str, str]


class DesignOut(Schema):
    key: str
    name: str
    status: StatusValue
    factors: list[str]
    runs: int
    randomize_by: str | None
    salt: str = Field(description="Immutable; with a unit key (or lot) it decides the run.")
    generators: list[str]
    resolution: int | None
    defining_relation: list[str]
    word_length_pattern: list[int] = Field(description="[A3, A4, …, Ak]")
    aliases: dict[str, list[str]]
    runs_table: list[RunOut]
    created_at: datetime

    @staticmethod
    def resolve_factors(obj) -> list[str]:
        return [factor.experiment.key for factor in obj.factor_list]

    @staticmethod
    def resolve_resolution(obj):
        return _fraction(obj).resolution

    @staticmethod
    def resolve_defining_relation(obj):
        return _fraction(obj).defining_relation

    @staticmethod
    def resolve_word_length_pattern(obj):
        return _fraction(obj).word_length_pattern

    @staticmethod
    def resolve_aliases(obj):
        return _fraction(obj).aliases

    @staticmethod
    def resolve_runs_table(obj):
        factors = obj.factor_list
        return [
            {
                "run": run,
                "levels": {
                    f.experiment.key: (f.high if level else f.low).key
                    for f, level in zip(factors, levels, strict=True)
                },
            }
            for run, levels in enumerate(_fraction(obj).runs_table, start=1)
        ]


def _fraction(obj):
    fraction = getattr(obj, "_fraction", None)
    if fraction is None:
        fraction = obj._fraction = selectors.design_fraction(obj)
    return fraction


@router.get("", response=list[DesignOut])
@paginate(Pagination)
def list_designs(request, product: Path[str], filters: Query[StatusFilter]):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.design_list(product=product_obj, status=filters.status)


@router.post("", response={201: DesignOut})
def create_design(request, product: Path[str], body: DesignIn):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    design = services.design_create(product=product_obj, actor=request.auth.username, **body.dict())
    return Status(201, selectors.design_get(product=product_obj, key=design.key))


@router.get("/{design}", response=DesignOut)
def get_design(request, product: Path[str], design: Path[str]):
    return _design(request, product, design)


@router.delete("/{design}", response=DesignOut)
def remove_design(request, product: Path[str], design: Path[str]):
    design_obj = _design(request, product, design)
    services.design_remove(design=design_obj, actor=request.auth.username)
    return design_obj


def _design(request, product: str, design: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.design_get(product=product_obj, key=design)


# --- analysis --------------------------------------------------------------------------------


class MetricQuery(Schema):
    metric: str = Field(max_length=200, description="The metric key")


class EffectOut(Schema):
    term: str = Field(description="A lowest-order member of the alias chain, e.g. `AB`")
    aliases: list[str] = Field(description="The chain's other effects of at most 3 factors")
    coefficient: float
    effect: float = Field(description="2 × coefficient")
    se: float | None
    t: float | None
    p_value: float | None
    active: bool | None = Field(None, description="Unreplicated: |effect| > margin_of_error")


class DesignAnalysisOut(Schema):
    design: str
    metric: str
    factors: dict[str, str] = Field(description="Letter → experiment key")
    n: int = Field(description="Measured units whose stored levels form a run of the design")
    excluded: int = Field(description="Other measured units (a factor unassigned, or off-run)")
    runs: int
    runs_observed: int
    residual_df: int | None
    pse: float | None = Field(description="Lenth's pseudo standard error (unreplicated)")
    margin_of_error: float | None = Field(description="t(0.975, m/3) · PSE (unreplicated)")
    effects: list[EffectOut] | None = Field(description="Null while a run has no unit")
    note: str | None
    replica_lag_seconds: float = REPLICA_LAG_FIELD
    plot_url: str = PLOT_URL_FIELD


@router.get(
    "/{design}/analysis",
    response=DesignAnalysisOut,
    exclude_unset=True,
    summary="Effects of every estimable alias chain of the design on a metric",
)
def get_design_analysis(request, product: Path[str], design: Path[str], query: Query[MetricQuery]):
    from lab.analysis.designs import design_analysis

    product_obj = product_selectors.product_get(user=request.auth, key=product)
    with analysis_reads() as read:
        report = design_analysis(product=product_obj, design=design, metric=query.metric)
    return {
        **report,
        "replica_lag_seconds": read.replica_lag_seconds,
        "plot_url": plot_url(request, Plot("effects", product, query.metric, target=design)),
    }


@router.get(
    "/{design}/effects.svg",
    summary="Half-normal plot of the design's effects on a metric (SVG)",
    openapi_extra=SVG,
)
def get_effects_svg(request, product: Path[str], design: Path[str], query: Query[MetricQuery]):
    return svg_response(request, Plot("effects", product, query.metric, target=design))
