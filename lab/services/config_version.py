"""The config version of a product: what tells every decide worker to recompile.

Every write that changes what decide answers calls `product_config_changed(product)` inside
its own transaction, so the new version becomes visible exactly when the change commits.
The database is the authority: decide reads the version in the same round trip as the
unit's assignments, and caches compiled configs (in Redis and in worker memory) under
(product, version) keys that never go stale. No TTL, no invalidation message to lose.

A version is a random 63-bit number, not a counter: a counter restarts at the same values
in every database, so two deployments sharing a Redis, or a restored backup next to its
original, would reach the same (product, version) with different experiments. Random
versions never meet (docs/decide.md, "The config cache").
"""

from lab.models import Product, new_config_version


def product_config_changed(product: Product) -> None:
    Product.objects.filter(pk=product.pk).update(config_version=new_config_version())
