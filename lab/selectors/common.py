from django.db.models import QuerySet

from lab.models import Status


def visible(queryset: QuerySet, status: str | None) -> QuerySet:
    """Listings hide removed objects unless they are asked for by status."""
    if status:
        return queryset.filter(status=status)
    return queryset.exclude(status=Status.REMOVED)
