from datetime import datetime

from ninja import Path, Router, Schema
from ninja.pagination import paginate

from admin_api.pagination import Pagination
from admin_api.schemas import Batch
from lab.schema_types import InputSchema, UnitKey
from lab.selectors import units as selectors
from lab.selectors.products import product_get
from lab.services import units as services

router = Router(tags=["units"])


class UnitsIn(InputSchema):
    units: Batch(UnitKey, "units")


class UnitsCreatedOut(Schema):
    created: int
    existing: int


class UnitOut(Schema):
    key: str
    created_at: datetime


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
    summary="Create units in bulk (up to 10,000; existing ones are left as they are)",
)
def create_units(request, product: Path[str], body: UnitsIn):
    return services.units_create(
        product=product_get(user=request.auth, key=product), keys=body.units
    )


@router.get(
    "/{unit}", response=UnitDetailOut, summary="A unit with its assignments and measurements"
)
def get_unit(request, product: Path[str], unit: Path[UnitKey]):
    return selectors.unit_detail(product=product_get(user=request.auth, key=product), key=unit)
