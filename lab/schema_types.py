"""Strict input types shared by the APIs: hostile input is refused at the edge."""

from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, Strict

from decide.targeting import MAX_ATTRIBUTES, check_attributes
from lab.keys import KEY_PATTERN, unit_key_problem


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
UnitKey = Annotated[str, Strict(), AfterValidator(_unit_key)]
Name = Annotated[str, Strict(), Field(max_length=200), AfterValidator(_no_nul)]
Text = Annotated[str, Strict(), Field(max_length=10_000), AfterValidator(_no_nul)]
FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_storable)]
# Unit attributes (docs/decide.md, "Targeting"); a bad one is a 422 naming it.
Attributes = Annotated[
    dict[str, Any],
    AfterValidator(check_attributes),
    Field(
        description=(
            f"At most {MAX_ATTRIBUTES} names matching ^[A-Za-z_][A-Za-z0-9_.-]{{0,63}}$; "
            "values: string (<= 256 characters), finite number, boolean, or a list of at "
            "most 100 strings."
        ),
        json_schema_extra={"maxProperties": MAX_ATTRIBUTES},
    ),
]


class InputSchema(Schema):
    """Base of every request body: unknown fields and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
