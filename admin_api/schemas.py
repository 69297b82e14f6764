"""Schemas shared by several admin routers. Each router keeps its own In/Patch/Out."""

from datetime import datetime
from typing import Literal

from ninja import Schema

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
