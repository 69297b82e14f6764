"""ninja's limit/offset pagination with bounds a database can take."""

from ninja import Field, Schema
from ninja.conf import settings
from ninja.pagination import LimitOffsetPagination

MAX_OFFSET = 2**31 - 1


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` → `{"items": [...], "count": N}`; an absurd offset is a 422, not a 500."""

    class Input(Schema):
        limit: int = Field(settings.PAGINATION_PER_PAGE, ge=1, le=settings.PAGINATION_MAX_LIMIT)
        offset: int = Field(0, ge=0, le=MAX_OFFSET)
