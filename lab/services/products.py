from django.db import transaction

from lab.models import Product, Status
from lab.services.common import apply_changes, conflict_on_duplicate
from lab.services.config_version import product_config_changed


def product_create(*, user, key: str, name: str = "") -> Product:
    with conflict_on_duplicate(f"a product with key {key!r} exists already"):
        return Product.objects.create(user=user, key=key, name=name or key)


@transaction.atomic
def product_update(*, product: Product, actor: str, changes: dict) -> Product:
    changed = apply_changes(
        obj=product,
        changes=changes,
        product=product,
        actor=actor,
        object_type="product",
        object_key=product.key,
    )
    if "status" in changed:
        product_config_changed(product)
        product.refresh_from_db(fields=["config_version"])
    return product


def product_remove(*, product: Product, actor: str) -> Product:
    return product_update(product=product, actor=actor, changes={"status": Status.REMOVED})
