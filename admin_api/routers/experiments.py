from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field

from admin_api.pagination import Pagination
from admin_api.routers.variants import VariantIn
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import FiniteFloat, InputSchema, Key, Name, Text, Timestamp
from lab.selectors import experiments as selectors
from lab.selectors import products as product_selectors
from lab.services import experiments as services
from rules.targeting import ATTRIBUTE_NAME_PATTERN, MAX_CONDITIONS, OPERATORS

router = Router(tags=["experiments"])

MAX_VARIANTS_PER_CALL = 100

Coverage = Annotated[
    FiniteFloat,
    Field(
        ge=0,
        le=1,
        description="Share of units in the experiment (0-1); raising it never moves one.",
    ),
]
STEP_HELP = "Key of the process step the experiment changes (null for none)."
LAYER_HELP = "Key of the layer the experiment shares with mutually exclusive ones (null: none)."
RANGE_HELP = (
    "[start, end) of the layer's hash space the experiment owns, 0 <= start < end <= 1; "
    "enabled experiments of one layer never overlap."
)

RANDOMIZE_BY_HELP = (
    "Name of the unit attribute (e.g. lot) whose value is hashed instead of the unit key: "
    "every unit of a lot gets the lot's variant, and results analyse lots as the "
    "independent units (docs/results.md, 'Lots'). Null randomizes units. Fixed once the "
    "experiment has an assignment."
)
RandomizeBy = Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN, max_length=64)]


class ConditionIn(InputSchema):
    attribute: str = Field(
        description="Name of the unit attribute tested.",
        json_schema_extra={"pattern": ATTRIBUTE_NAME_PATTERN},
    )
    operator: Literal[OPERATORS] = Field(description="How it is tested (docs/decide.md).")
    values: list[Any] = Field(
        default_factory=list,
        max_length=1000,
        description="Strings for in/not_in; one value for the others; none for exists.",
        # Which of them an operator takes, the server checks (docs/decide.md).
        json_schema_extra={"items": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
    )


Conditions = Annotated[
    list[ConditionIn],
    Field(max_length=MAX_CONDITIONS, description="Targeting: all must hold (docs/decide.md)."),
]
RangeBound = Annotated[FiniteFloat, Field(ge=0, le=1)]
LayerRange = Annotated[tuple[RangeBound, RangeBound], Field(description=RANGE_HELP)]


class _Targeting(InputSchema):
    conditions: Conditions = None
    start_at: Timestamp | None = Field(
        default=None, description="Decided from this moment on (ISO 8601 with offset)."
    )
    end_at: Timestamp | None = Field(
        default=None, description="Decided until this moment, excluded (ISO 8601 with offset)."
    )
    layer: Key | None = Field(default=None, description=LAYER_HELP)
    layer_range: LayerRange | None = None
    randomize_by: RandomizeBy | None = Field(default=None, description=RANDOMIZE_BY_HELP)


class ExperimentIn(_Targeting):
    key: Key
    name: Name = ""
    description: Text = ""
    status: Literal["enabled", "disabled"] = "enabled"
    step: Key | None = Field(default=None, description=STEP_HELP)
    coverage: Coverage = 1.0
    variants: list[VariantIn] = Field(
        default_factory=list,
        max_length=MAX_VARIANTS_PER_CALL,
        description="Variants created with the experiment, in bucketing order (all or nothing).",
    )


class ExperimentPatch(_Targeting):
    name: Name = None
    description: Text = None
    status: StatusValue = None
    step: Key | None = Field(default=None, description=STEP_HELP)
    coverage: Coverage = None


class VariantSummary(Schema):
    key: str
    name: str
    status: StatusValue
    weight: float
    is_control: bool


class ExperimentOut(Schema):
    key: str
    name: str
    description: str
    status: StatusValue
    step: str | None
    coverage: float
    salt: str = Field(description="Immutable; with a unit key it decides the unit's bucket.")
    created_at: datetime
    conditions: list[dict]
    start_at: datetime | None
    end_at: datetime | None
    layer: str | None
    layer_range: list[float] | None
    randomize_by: str | None = Field(description=RANDOMIZE_BY_HELP)
    variants: list[VariantSummary] = Field(
        description="The variants that are not removed, in creation (bucketing) order."
    )
    control: str | None = Field(
        description=(
            "Key of the control: the variant marked is_control unless it is removed, "
            "else the oldest variant not removed."
        )
    )

    @staticmethod
    def resolve_step(obj) -> str | None:
        return obj.step.key if obj.step_id else None

    @staticmethod
    def resolve_layer(obj) -> str | None:
        return obj.layer.key if obj.layer_id else None

    @staticmethod
    def resolve_layer_range(obj) -> list[float] | None:
        return None if obj.layer_start is None else [obj.layer_start, obj.layer_end]

    @staticmethod
    def resolve_variants(obj):
        return selectors.experiment_live_variants(obj)

    @staticmethod
    def resolve_control(obj) -> str | None:
        control = selectors.experiment_control(obj)
        return control.key if control else None


@router.get("", response=list[ExperimentOut])
@paginate(Pagination)
def list_experiments(request, product: Path[str], filters: Query[StatusFilter]):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.experiment_list(product=product_obj, status=filters.status)


@router.post("", response={201: ExperimentOut})
def create_experiment(request, product: Path[str], body: ExperimentIn):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return Status(
        201,
        services.experiment_create(
            product=product_obj,
            actor=request.auth.username,
            **body.dict(),
        ),
    )


@router.get("/{experiment}", response=ExperimentOut)
def get_experiment(request, product: Path[str], experiment: Path[str]):
    return _experiment(request, product, experiment)


@router.patch("/{experiment}", response=ExperimentOut)
def update_experiment(request, product: Path[str], experiment: Path[str], body: ExperimentPatch):
    return services.experiment_update(
        experiment=_experiment(request, product, experiment),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True),
    )


@router.delete("/{experiment}", response=ExperimentOut)
def remove_experiment(request, product: Path[str], experiment: Path[str]):
    return services.experiment_remove(
        experiment=_experiment(request, product, experiment), actor=request.auth.username
    )


def _experiment(request, product: str, experiment: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.experiment_get(product=product_obj, key=experiment)
