"""Characterization analyses beyond the per-experiment report: the factorial ANOVA across
experiments, control charts, the SVG plots and the CSV export (docs/results.md §11–15)."""

from typing import Literal

from ninja import Path, Query, Router, Schema
from pydantic import Field

from lab.analysis import factorial
from lab.selectors.products import product_get

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
    experiments: list[str]
    metric: str
    n: int
    sum_sq_type: Literal[3]
    cells: list[CellOut]
    anova: list[AnovaRowOut] | None = Field(
        description="Null when a cell is empty (see `anova_note`)"
    )
    anova_note: str | None
    r_squared: float | None
    residual_std: float | None


class FactorialQuery(Schema):
    experiments: str = Field(
        max_length=1000, description="1 to 3 experiment keys separated by commas: `A,B[,C]`"
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
    return factorial.factorial_analysis(
        product=product_obj, experiments=query.experiments, metric=query.metric
    )
