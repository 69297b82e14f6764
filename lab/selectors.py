"""Reads: every lookup is scoped to the tenant, so another tenant's object is a 404."""

from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import Product, Status


def _visible(queryset: QuerySet, status: str | None) -> QuerySet:
    """Listings hide removed objects unless they are asked for by status."""
    if status:
        return queryset.filter(status=status)
    return queryset.exclude(status=Status.REMOVED)


def product_list(*, user, status: str | None = None) -> QuerySet[Product]:
    return _visible(Product.objects.filter(user=user), status).order_by("id")


def product_get(*, user, key: str) -> Product:
    product = Product.objects.filter(user=user, key=key).first()
    if product is None:
        raise NotFound(f"no product {key!r}")
    return product
