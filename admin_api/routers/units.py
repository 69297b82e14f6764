from datetime import datetime
from typing import Annotated

from ninja import Path, Router, Schema
from ninja.pagination import paginate
from pydantic import Discriminator, Field, Tag

from admin_api.pagination import Pagination
from admin_api.schemas import Batch
from lab.schema_types import Attributes, InputSchema, UnitKey
from lab.selectors import units as selectors
from lab.selectors.products import product_get
from lab.services import units as services

router = Router(tags=["units"])


class UnitRowIn(InputSchema):
    key: UnitKey
    attributes: Attributes | None = Field(
        default=None,
        description="Replaces the unit's stored attributes; left out: they are kept.",
    )


UnitItem = Annotated[
    Annotated[UnitKey, Tag("key")] | Annotated[UnitRowIn, Tag("object")],
    Discriminator(lambda value: "key" if isinstance(value, str) else "object"),
]


class UnitsIn(InputSchema):
    units: Batch(UnitItem, "units")


class UnitPatch(InputSchema):
    attributes: Attributes = Field(description="The unit's attributes, replacing the stored ones.")


class UnitsCreatedOut(Schema):
    created: int
    existing: int
    updated: int = Field(description="Existing units whose attributes were replaced.")


class UnitOut(Schema):
    key: str
    created_at: datetime
    attributes: dict


class UnitAssignmentOut(Schema):
    experiment: str
    variant: str
    source: str
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_experiment(obj) -> str:
        return obj.experiment.key

    @staticmethod
    def resolve_variant(obj) -> str:
        return obj.variant.key


class UnitMeasurementOut(Schema):
    metric: str
    value: float
    measured_at: datetime
    in_spec: bool | None

    @staticmethod
    def resolve_metric(obj) -> str:
        return obj.metric.key


class UnitDetailOut(UnitOut):
    assignments: list[UnitAssignmentOut]
    measurements: list[UnitMeasurementOut]

    @staticmethod
    def resolve_assignments(obj) -> list:
        return obj.assignment_list

    @staticmethod
    def resolve_measurements(obj) -> list:
        return obj.measurement_list


@router.get("", response=list[UnitOut])
@paginate(Pagination)
def list_units(request, product: Path[str]):
    return selectors.unit_list(product=product_get(user=request.auth, key=product))


@router.post(
    "",
    response=UnitsCreatedOut,
    summary=(
        "Create units in bulk, with attributes (up to 10,000; all or nothing): a bare key "
        "leaves an existing unit as it is, a row with attributes replaces its attributes"
    ),
)
def create_units(request, product: Path[str], body: UnitsIn):
    rows = [
        item
        if isinstance(item, str)
        else services.UnitRow(key=item.key, attributes=item.attributes)
        for item in body.units
    ]
    return services.units_create(product=product_get(user=request.auth, key=product), keys=rows)


@router.get(
    "/{unit}", response=UnitDetailOut, summary="A unit with its assignments and measurements"
)
def get_unit(request, product: Path[str], unit: Path[UnitKey]):
    return selectors.unit_detail(product=product_get(user=request.auth, key=product), key=unit)


@router.patch("/{unit}", response=UnitDetailOut, summary="Replace a unit's attributes")
def update_unit(request, product: Path[str], unit: Path[UnitKey], body: UnitPatch):
    product_obj = product_get(user=request.auth, key=product)
    services.unit_set_attributes(
        unit=selectors.unit_get(product=product_obj, key=unit), attributes=body.attributes
    )
    return selectors.unit_detail(product=product_obj, key=unit)
