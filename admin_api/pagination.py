"""ninja's limit/offset pagination with bounds a database can take."""

from typing import Any

from ninja import Field, Schema
from ninja.conf import settings
from ninja.pagination import LimitOffsetPagination

MAX_OFFSET = 2**31 - 1


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` → `{"items": [...], "count": N}`; an absurd offset is a 422, not a 500."""

    class Input(Schema):
        limit: int = Field(settings.PAGINATION_PER_PAGE, ge=1, le=settings.PAGINATION_MAX_LIMIT)
        offset: int = Field(0, ge=0, le=MAX_OFFSET)


class AnalysisPagination(Pagination):
    """Pagination of a list that is an analysis read (lab/replica.py): the page is read on
    the replica when it may be, and says how stale it is."""

    class Output(Schema):
        items: list[Any]
        count: int
        replica_lag_seconds: float

    def paginate_queryset(self, queryset, pagination, **params):
        from lab.replica import analysis_reads

        with analysis_reads() as read:
            page = super().paginate_queryset(queryset, pagination, **params)
            page["items"] = list(page["items"])  # read inside: on the chosen database
        return {**page, "replica_lag_seconds": read.replica_lag_seconds}
