from datetime import datetime
from typing import Annotated

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field, StrictInt

from admin_api.pagination import Pagination
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import InputSchema, IntegralFloatAsInt, Key, Name
from lab.selectors import products as product_selectors
from lab.selectors import steps as selectors
from lab.services import steps as services

router = Router(tags=["steps"])

Position = Annotated[StrictInt, Field(ge=0, le=services.POSITION_MAX), IntegralFloatAsInt]


class StepIn(InputSchema):
    key: Key
    name: Name = ""
    position: Position | None = Field(
        default=None, description="Order in the process; default: after the last step."
    )


class StepPatch(InputSchema):
    name: Name = None
    position: Position = None
    status: StatusValue = None


class StepOut(Schema):
    key: str
    name: str
    position: int
    status: StatusValue
    created_at: datetime


@router.get("", response=list[StepOut])
@paginate(Pagination)
def list_steps(request, product: Path[str], filters: Query[StatusFilter]):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.step_list(product=product_obj, status=filters.status)


@router.post("", response={201: StepOut})
def create_step(request, product: Path[str], body: StepIn):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return Status(201, services.step_create(product=product_obj, **body.dict()))


@router.get("/{step}", response=StepOut)
def get_step(request, product: Path[str], step: str):
    return _step(request, product, step)


@router.patch("/{step}", response=StepOut)
def update_step(request, product: Path[str], step: str, body: StepPatch):
    return services.step_update(
        step=_step(request, product, step),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True),
    )


@router.delete("/{step}", response=StepOut)
def remove_step(request, product: Path[str], step: str):
    return services.step_remove(step=_step(request, product, step), actor=request.auth.username)


def _step(request, product: str, step: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.step_get(product=product_obj, key=step)
