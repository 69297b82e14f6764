"""Schemas shared by several admin routers. Each router keeps its own In/Patch/Out."""

from datetime import datetime
from typing import Annotated, Literal

from ninja import Schema
from pydantic import BeforeValidator, Field

from lab.services.bulk import check_batch_size

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
