from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import Metric, Product
from lab.selectors.common import visible
from rules.keys import is_valid_key


def metric_list(*, product: Product, status: str | None = None) -> QuerySet[Metric]:
    return (
        visible(Metric.objects.filter(product=product), status)
        .select_related("step")
        .order_by("id")
    )


def metric_get(*, product: Product, key: str) -> Metric:
    metric = (
        Metric.objects.select_related("step").filter(product=product, key=key).first()
        if is_valid_key(key)
        else None
    )
    if metric is None:
        raise NotFound(f"no metric {key!r} in product {product.key!r}")
    metric.product = product
    return metric
