"""Strict input types shared by the APIs: hostile input is refused at the edge."""

from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Field, Strict

from rules.keys import KEY_PATTERN, UNIT_KEY_JSON_PATTERN, unit_key_problem
from rules.targeting import (
    ATTRIBUTE_NAME_PATTERN,
    MAX_ATTRIBUTES,
    MAX_LIST_ITEMS,
    MAX_NUMBER,
    MAX_STRING_LENGTH,
    check_attributes,
)

# What _no_nul refuses, as a JSON Schema pattern for the OpenAPI documents (but unpaired
# surrogates: see rules.keys.UNIT_KEY_JSON_PATTERN).
TEXT_JSON_PATTERN = r"^[^\x00]*$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("text may not contain unpaired surrogates")
    return value


def _unit_key(value: str) -> str:
    problem = unit_key_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _integral_number(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3 (as JSON Schema's "integer" says);
    3.5, strings and booleans are left for the strict integer check to refuse."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def utc_problem(moment: datetime) -> str | None:
    """Why an aware `moment` cannot be stored, or None: in UTC it must fall in years 1-9999."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return "the time is out of range once converted to UTC (years 1 to 9999)"
    return None


def _storable(moment: datetime) -> datetime:
    problem = utc_problem(moment)
    if problem:
        raise ValueError(problem)
    return moment


Key = Annotated[str, Strict(), Field(pattern=KEY_PATTERN, max_length=64)]
# The length is checked by _unit_key (its own message); the OpenAPI documents state it all.
UnitKey = Annotated[
    str,
    Strict(),
    AfterValidator(_unit_key),
    Field(json_schema_extra={"minLength": 1, "maxLength": 128, "pattern": UNIT_KEY_JSON_PATTERN}),
]
Name = Annotated[
    str,
    Strict(),
    Field(max_length=200, json_schema_extra={"pattern": TEXT_JSON_PATTERN}),
    AfterValidator(_no_nul),
]
Text = Annotated[
    str,
    Strict(),
    Field(max_length=10_000, json_schema_extra={"pattern": TEXT_JSON_PATTERN}),
    AfterValidator(_no_nul),
]
# Put last in an integer's Annotated (after its Strict and bounds, so that they stay in the
# JSON Schema): the integer may be written 3 or 3.0, never 3.5, "3" or true.
IntegralFloatAsInt = BeforeValidator(_integral_number)
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_storable)]
_ATTRIBUTE_STRING = {"type": "string", "maxLength": MAX_STRING_LENGTH, "pattern": TEXT_JSON_PATTERN}
# An attribute's value (check_attributes), for the OpenAPI documents.
ATTRIBUTE_VALUE_JSON_SCHEMA = {
    "anyOf": [
        _ATTRIBUTE_STRING,
        {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
        {"type": "boolean"},
        {"type": "array", "maxItems": MAX_LIST_ITEMS, "items": _ATTRIBUTE_STRING},
    ]
}
# Unit attributes (docs/decide.md, "Targeting"); a bad one is a 422 naming it.
Attributes = Annotated[
    dict[str, Any],
    AfterValidator(check_attributes),
    Field(
        description=(
            f"At most {MAX_ATTRIBUTES} names matching ^[A-Za-z_][A-Za-z0-9_.-]{{0,63}}$; "
            "values: string (<= 256 characters), number (between -(2**53 - 1) and 2**53 - 1), "
            "boolean, or a list of at most 100 strings."
        ),
        json_schema_extra={
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": {"pattern": ATTRIBUTE_NAME_PATTERN},
            "additionalProperties": ATTRIBUTE_VALUE_JSON_SCHEMA,
        },
    ),
]


class InputSchema(Schema):
    """Base of every request body: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
