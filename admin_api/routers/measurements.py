from datetime import datetime

from ninja import Path, Query, Router, Schema
from ninja.pagination import paginate

from admin_api.pagination import AnalysisPagination
from admin_api.schemas import Batch, UpsertedOut
from lab.schema_types import FiniteFloat, InputSchema, Key, Timestamp, UnitKey
from lab.selectors import measurements as selectors
from lab.selectors.products import product_get
from lab.services import measurements as services

router = Router(tags=["measurements"])


class MeasurementRowIn(InputSchema):
    metric: Key
    unit: UnitKey
    value: FiniteFloat
    measured_at: Timestamp | None = None


class MeasurementsIn(InputSchema):
    measurements: Batch(MeasurementRowIn, "measurements")


class MeasurementOut(Schema):
    metric: str
    unit: str
    value: float
    measured_at: datetime
    in_spec: bool | None

    @staticmethod
    def resolve_metric(obj) -> str:
        return obj.metric.key

    @staticmethod
    def resolve_unit(obj) -> str:
        return obj.unit.key


class MeasurementFilter(Schema):
    metric: Key | None = None
    unit: UnitKey | None = None


@router.get("", response=list[MeasurementOut])
@paginate(AnalysisPagination)
def list_measurements(request, product: Path[str], filters: Query[MeasurementFilter]):
    return selectors.measurement_list(
        product=product_get(user=request.auth, key=product),
        metric=filters.metric,
        unit=filters.unit,
    )


@router.post(
    "",
    response=UpsertedOut,
    summary="Record measurements in bulk (up to 10,000; all or nothing; replaces earlier values)",
)
def record_measurements(request, product: Path[str], body: MeasurementsIn):
    return services.measurements_record(
        product=product_get(user=request.auth, key=product),
        rows=[
            services.MeasurementRow(
                metric=row.metric, unit=row.unit, value=row.value, measured_at=row.measured_at
            )
            for row in body.measurements
        ],
    )
