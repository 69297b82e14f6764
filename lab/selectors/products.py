from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import ClientKey, Product
from lab.selectors.common import visible
from rules.keys import is_valid_key


def product_list(*, user, status: str | None = None) -> QuerySet[Product]:
    return visible(Product.objects.filter(user=user), status).order_by("id")


def product_get(*, user, key: str) -> Product:
    product = Product.objects.filter(user=user, key=key).first() if is_valid_key(key) else None
    if product is None:
        raise NotFound(f"no product {key!r}")
    return product


def client_key_list(*, product: Product) -> QuerySet[ClientKey]:
    return ClientKey.objects.filter(product=product, revoked_at__isnull=True).order_by("id")
