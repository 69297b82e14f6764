from datetime import datetime
from typing import Annotated, Literal

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field, StrictBool

from admin_api.pagination import Pagination
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import FiniteFloat, InputSchema, Key, Name
from lab.selectors import experiments as experiment_selectors
from lab.selectors import products as product_selectors
from lab.selectors import variants as selectors
from lab.services import variants as services

router = Router(tags=["variants"])

Weight = Annotated[
    FiniteFloat,
    Field(
        ge=0,
        le=services.WEIGHT_MAX,
        description="Share of new units, relative to the other enabled variants (0: none).",
    ),
]
IsControl = Annotated[
    StrictBool,
    Field(description="The variant the others are compared with; at most one per experiment."),
]


class VariantIn(InputSchema):
    key: Key
    name: Name = ""
    status: Literal["enabled", "disabled"] = "enabled"
    weight: Weight = 1.0
    is_control: IsControl = False


class VariantPatch(InputSchema):
    name: Name = None
    status: StatusValue = None
    weight: Weight = None
    is_control: IsControl = None


class VariantOut(Schema):
    key: str
    name: str
    status: StatusValue
    weight: float
    is_control: bool
    created_at: datetime


@router.get("", response=list[VariantOut])
@paginate(Pagination)
def list_variants(request, product: Path[str], experiment: Path[str], filters: Query[StatusFilter]):
    experiment_obj = _experiment(request, product, experiment)
    return selectors.variant_list(experiment=experiment_obj, status=filters.status)


@router.post("", response={201: VariantOut})
def create_variant(request, product: Path[str], experiment: Path[str], body: VariantIn):
    experiment_obj = _experiment(request, product, experiment)
    return Status(201, services.variant_create(experiment=experiment_obj, **body.dict()))


@router.get("/{variant}", response=VariantOut)
def get_variant(request, product: Path[str], experiment: Path[str], variant: str):
    return _variant(request, product, experiment, variant)


@router.patch("/{variant}", response=VariantOut)
def update_variant(
    request, product: Path[str], experiment: Path[str], variant: str, body: VariantPatch
):
    return services.variant_update(
        variant=_variant(request, product, experiment, variant),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True),
    )


@router.delete("/{variant}", response=VariantOut)
def remove_variant(request, product: Path[str], experiment: Path[str], variant: str):
    return services.variant_remove(
        variant=_variant(request, product, experiment, variant), actor=request.auth.username
    )


def _experiment(request, product: str, experiment: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return experiment_selectors.experiment_get(product=product_obj, key=experiment)


def _variant(request, product: str, experiment: str, variant: str):
    experiment_obj = _experiment(request, product, experiment)
    return selectors.variant_get(experiment=experiment_obj, key=variant)
