"""Schemas shared by several admin routers. Each router keeps its own In/Patch/Out."""

from datetime import datetime
from typing import Annotated, Literal

from ninja import Schema
from pydantic import AfterValidator, BeforeValidator, Field

from lab.services.bulk import check_batch_size
from rules.keys import KEY_PATTERN

StatusValue = Literal["enabled", "disabled", "removed"]


class StatusFilter(Schema):
    status: StatusValue | None = None


class Deleted(Schema):
    key: str
    status: StatusValue


class AuditEventOut(Schema):
    id: int
    actor: str
    action: str
    object_type: str
    object_key: str
    from_value: str
    to_value: str
    created_at: datetime


class UpsertedOut(Schema):
    """The answer of a bulk upsert: how many rows it created and how many it replaced."""

    created: int
    updated: int


def Batch(item, what: str):
    """A list of at most 10,000 `item`s, counted before any row is validated, so an
    oversized batch answers 413 (not a 422 per row)."""

    def at_most_a_batch(value):
        if isinstance(value, list):
            check_batch_size(count=len(value), what=what)
        return value

    return Annotated[list[item], BeforeValidator(at_most_a_batch)]


REPLICA_LAG_FIELD = Field(
    description="How far behind the primary the answer may be, in seconds: the replay lag of "
    "the replica it was read from (DATABASE_REPLICA_URL), or 0 when read from the primary",
)


def _comma_separated(value):
    """The values of a repeated query parameter, each split at commas: `?x=a,b`, `?x=a&x=b`
    and `?x=a,b&x=c` all give a list of keys. `?x=` alone is the empty list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value
    keys = []
    for item in value:
        if not isinstance(item, str):
            return value  # refused by the item type
        if item.strip():
            keys.extend(part.strip() for part in item.split(","))
    return keys


def _distinct(keys: list[str]) -> list[str]:
    seen = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{key!r} is listed twice: each key may be listed once")
        seen.add(key)
    return keys


def KeyList(*, min_items: int, max_items: int, what: str):
    """A query parameter listing distinct keys, validated by the schema (422 otherwise).

    Documented in OpenAPI as an array with `style: form, explode: false` (`?x=a,b`, the form
    the docs show); the repeated form `?x=a&x=b` is accepted too, and spaces around a key are
    ignored. Ninja reads every repetition of a list-typed parameter."""
    key = Annotated[str, Field(pattern=KEY_PATTERN, max_length=64)]
    return Annotated[
        list[key],
        BeforeValidator(_comma_separated),
        AfterValidator(_distinct),
        Field(
            min_length=min_items,
            max_length=max_items,
            description=f"{what}: {min_items} to {max_items} distinct keys, separated by "
            "commas (`a,b`), or the parameter repeated once per key",
            json_schema_extra={"uniqueItems": True},
        ),
    ]


def comma_separated_query_lists(schema: dict) -> None:
    """Mark the admin API's array query parameters as comma-separated in OpenAPI (`style:
    form, explode: false`), the form the docs show; the server also takes them repeated."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["schema"].get("type") == "array":
                    parameter["style"] = "form"
                    parameter["explode"] = False
