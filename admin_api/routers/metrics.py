from datetime import datetime
from typing import Annotated

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field

from admin_api.pagination import Pagination
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import FiniteFloat, InputSchema, Key, Name
from lab.selectors import metrics as selectors
from lab.selectors import products as product_selectors
from lab.services import metrics as services

router = Router(tags=["metrics"])

UnitOfMeasure = Annotated[Name, Field(max_length=32)]
STEP_HELP = "Key of the step where the metric is measured (null for none)."
LIMITS_HELP = "Each limit is optional; those given keep lower_limit <= nominal <= upper_limit."


class MetricIn(InputSchema):
    key: Key
    name: Name = ""
    step: Key | None = Field(default=None, description=STEP_HELP)
    lower_limit: FiniteFloat | None = Field(default=None, description=LIMITS_HELP)
    nominal: FiniteFloat | None = None
    upper_limit: FiniteFloat | None = None
    unit_of_measure: UnitOfMeasure = ""


class MetricPatch(InputSchema):
    """Null clears a limit or the step; the limits that result must stay in order."""

    name: Name = None
    step: Key | None = Field(default=None, description=STEP_HELP)
    lower_limit: FiniteFloat | None = Field(default=None, description=LIMITS_HELP)
    nominal: FiniteFloat | None = None
    upper_limit: FiniteFloat | None = None
    unit_of_measure: UnitOfMeasure = None
    status: StatusValue = None


class MetricOut(Schema):
    key: str
    name: str
    step: str | None
    lower_limit: float | None
    nominal: float | None
    upper_limit: float | None
    unit_of_measure: str
    status: StatusValue
    created_at: datetime

    @staticmethod
    def resolve_step(obj) -> str | None:
        return obj.step.key if obj.step_id else None


@router.get("", response=list[MetricOut])
@paginate(Pagination)
def list_metrics(request, product: Path[str], filters: Query[StatusFilter]):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.metric_list(product=product_obj, status=filters.status)


@router.post("", response={201: MetricOut})
def create_metric(request, product: Path[str], body: MetricIn):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return Status(201, services.metric_create(product=product_obj, **body.dict()))


@router.get("/{metric}", response=MetricOut)
def get_metric(request, product: Path[str], metric: str):
    return _metric(request, product, metric)


@router.patch("/{metric}", response=MetricOut)
def update_metric(request, product: Path[str], metric: str, body: MetricPatch):
    return services.metric_update(
        metric=_metric(request, product, metric),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True),
    )


@router.delete("/{metric}", response=MetricOut)
def remove_metric(request, product: Path[str], metric: str):
    return services.metric_remove(
        metric=_metric(request, product, metric), actor=request.auth.username
    )


def _metric(request, product: str, metric: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.metric_get(product=product_obj, key=metric)
