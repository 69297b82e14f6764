"""The config version of a product: what tells every decide worker to recompile.

Every write that changes what decide answers calls `product_config_changed(product)` inside
its own transaction, so the new version becomes visible exactly when the change commits.
The database is the authority: decide reads the version in the same round trip as the
unit's assignments, and caches compiled configs (in Redis and in worker memory) under
(product, version) keys that never go stale. No TTL, no invalidation message to lose.
"""

from django.db.models import F

from lab.models import Product


def product_config_changed(product: Product) -> None:
    Product.objects.filter(pk=product.pk).update(config_version=F("config_version") + 1)
