"""Request and response shapes of the decide API and of OFREP (for validation and OpenAPI).

The hot path renders its answers straight to JSON; these response schemas document them.
"""

from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model, field_validator

from lab.errors import PayloadTooLarge
from lab.schema_types import Attributes, InputSchema, Key, UnitKey
from rules.keys import UNIT_KEY_JSON_PATTERN

MAX_BATCH_UNITS = 1000
MAX_EXPERIMENTS_PER_REQUEST = 1000


class DecideFilters(InputSchema):
    experiments: list[Key] | None = Field(
        None,
        max_length=MAX_EXPERIMENTS_PER_REQUEST,
        description=(
            "Experiment keys to decide, answered in this order. A key that is unknown, paused "
            "(disabled or removed) or not at `step` answers null. Omitted: every enabled "
            "experiment of the product."
        ),
    )
    step: Key | None = Field(
        None, description="Only the experiments of this process step (an unknown step: none)."
    )


UNIT_KEY_DESCRIPTION = (
    'A unit key: 1-128 characters, no control characters, no "/", no white space at either '
    "end. Case-sensitive."
)
DocumentedUnitKey = Annotated[
    UnitKey,
    Field(
        min_length=1,
        max_length=128,
        description=UNIT_KEY_DESCRIPTION,
        json_schema_extra={"pattern": UNIT_KEY_JSON_PATTERN},
    ),
]


ATTRIBUTES_HELP = (
    "Attributes of the unit for this decision, overlaid key by key on its stored ones for "
    "the experiments' conditions; stored only when this decision creates the unit."
)


class DecideIn(DecideFilters):
    unit: DocumentedUnitKey
    attributes: Attributes | None = Field(None, description=ATTRIBUTES_HELP)


def validation_twin(schema: type[InputSchema]) -> type[BaseModel]:
    """A plain pydantic model with `schema`'s fields and configuration: it accepts and refuses
    the same bodies and makes the same values, without the wrapping validator of ninja's
    Schema (which, for a schema that forbids unknown fields, validates every body twice, the
    second time through an adapter for Django objects). For a body already parsed from JSON,
    where nothing is a Django object. Only for schemas whose checks are all in their fields'
    types (a validator method would not be carried over)."""
    decorators = schema.__pydantic_decorators__
    own = [
        name
        for kind in ("validators", "field_validators", "root_validators", "model_validators")
        for name in getattr(decorators, kind)
        if name != "_run_root_validator"
    ]
    if own or decorators.field_serializers or decorators.model_serializers:
        raise TypeError(f"{schema.__name__} has validators of its own: {own}")
    config = {k: v for k, v in schema.model_config.items() if k != "from_attributes"}
    fields = {name: (field.annotation, field) for name, field in schema.model_fields.items()}
    return create_model(f"{schema.__name__}Body", __config__=ConfigDict(**config), **fields)


# decide's body as the hot path validates it (decide/hot_path.py): DecideIn, validated once.
DecideInBody = validation_twin(DecideIn)


class BatchUnit(InputSchema):
    key: DocumentedUnitKey
    attributes: Attributes | None = Field(None, description=ATTRIBUTES_HELP)


BatchItem = Annotated[
    Annotated[DocumentedUnitKey, Tag("key")] | Annotated[BatchUnit, Tag("object")],
    Discriminator(lambda value: "key" if isinstance(value, str) else "object"),
]


class BatchIn(DecideFilters):
    units: list[BatchItem] = Field(
        description=f"Up to {MAX_BATCH_UNITS} units (more: 413): unit keys, or "
        '{"key", "attributes"} objects; a unit given twice is answered at each of its '
        "positions (with attributes, the first that has them counts).",
    )

    @field_validator("units", mode="before")
    @classmethod
    def _at_most_max_batch_units(cls, value: Any) -> Any:
        # Refused before validating each key; PayloadTooLarge answers 413 (not a 422).
        if isinstance(value, list) and len(value) > MAX_BATCH_UNITS:
            raise PayloadTooLarge(
                f"a batch holds at most {MAX_BATCH_UNITS} units, got {len(value)}; "
                "split it into several calls"
            )
        return value


class DecideOut(Schema):
    unit: str
    variants: dict[str, str | None] = Field(
        description="Experiment key -> variant key, or null when the unit gets no variant."
    )


class BatchOut(Schema):
    decisions: list[DecideOut]


class ErrorOut(Schema):
    detail: Any = Field(description="What is wrong: a message, or a list of field errors.")


ERRORS = {400: ErrorOut, 401: ErrorOut, 422: ErrorOut, 503: ErrorOut}


# --- OFREP (https://openfeature.dev/, service/openapi.yaml of open-feature/protocol)

OfrepReason = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"]


class OfrepEvaluation(Schema):
    key: str
    # Left out (not null) when the unit gets no variant: OFREP's codeDefaultFlag.
    value: str = Field(
        None,
        description="The variant key. Left out when the unit gets no variant (paused "
        "experiment, disabled product, outside the schedule, coverage or layer slot, targeted "
        "out, no eligible variant): the protocol's codeDefaultFlag, the SDK returns the "
        "caller's default.",
    )
    reason: OfrepReason
    variant: str = Field(description='The variant key, or "" when there is no `value`.')
    metadata: dict[str, bool | str | float] | None = None


class OfrepEvaluationFailure(Schema):
    key: str
    errorCode: Literal[
        "PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL", "FLAG_NOT_FOUND"
    ]
    errorDetails: str


class OfrepBulkEvaluation(Schema):
    flags: list[OfrepEvaluation]


class OfrepBulkFailure(Schema):
    errorCode: Literal["PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"]
    errorDetails: str
