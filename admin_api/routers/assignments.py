from datetime import datetime

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate

from admin_api.pagination import Pagination
from admin_api.schemas import Batch, UpsertedOut
from lab.schema_types import InputSchema, Key, UnitKey
from lab.selectors import assignments as selectors
from lab.selectors.experiments import experiment_get
from lab.selectors.products import product_get
from lab.services import assignments as services

router = Router(tags=["assignments"])


class AssignmentRowIn(InputSchema):
    unit: UnitKey
    variant: Key


class AssignmentsIn(InputSchema):
    assignments: Batch(AssignmentRowIn, "assignments")


class AssignmentIn(InputSchema):
    variant: Key


class AssignmentOut(Schema):
    unit: str
    variant: str
    source: str
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_unit(obj) -> str:
        return obj.unit.key

    @staticmethod
    def resolve_variant(obj) -> str:
        return obj.variant.key


class AssignmentFilter(Schema):
    variant: Key | None = None


def _experiment(request, product: str, experiment: str):
    return experiment_get(product=product_get(user=request.auth, key=product), key=experiment)


@router.get("", response=list[AssignmentOut])
@paginate(Pagination)
def list_assignments(
    request, product: Path[str], experiment: Path[str], filters: Query[AssignmentFilter]
):
    return selectors.assignment_list(
        experiment=_experiment(request, product, experiment), variant=filters.variant
    )


@router.post(
    "",
    response=UpsertedOut,
    summary="Force units onto variants in bulk (up to 10,000; all or nothing)",
)
def force_assignments(request, product: Path[str], experiment: Path[str], body: AssignmentsIn):
    return services.assignments_force(
        experiment=_experiment(request, product, experiment),
        rows=[(row.unit, row.variant) for row in body.assignments],
        actor=request.auth.username,
    )


@router.get("/{unit}", response=AssignmentOut)
def get_assignment(request, product: Path[str], experiment: Path[str], unit: Path[UnitKey]):
    return selectors.assignment_get(experiment=_experiment(request, product, experiment), unit=unit)


@router.put(
    "/{unit}",
    response={200: AssignmentOut, 201: AssignmentOut},
    summary="Force one unit onto a variant (201 when the unit had no assignment)",
)
def force_assignment(
    request, product: Path[str], experiment: Path[str], unit: Path[UnitKey], body: AssignmentIn
):
    assignment, created = services.assignment_force(
        experiment=_experiment(request, product, experiment),
        unit_key=unit,
        variant_key=body.variant,
        actor=request.auth.username,
    )
    return Status(201 if created else 200, assignment)
