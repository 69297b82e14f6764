from django.db.models import Prefetch, QuerySet

from lab.errors import NotFound
from lab.models import Experiment, Layer, Product, Status
from lab.selectors.common import visible
from rules.keys import is_valid_key

_MEMBERS = Prefetch(
    "experiments",
    queryset=Experiment.objects.exclude(status=Status.REMOVED).order_by("layer_start", "id"),
    to_attr="member_list",
)


def layer_list(*, product: Product, status: str | None = None) -> QuerySet[Layer]:
    return (
        visible(Layer.objects.filter(product=product), status)
        .prefetch_related(_MEMBERS)
        .order_by("id")
    )


def layer_get(*, product: Product, key: str) -> Layer:
    layer = (
        Layer.objects.filter(product=product, key=key).prefetch_related(_MEMBERS).first()
        if is_valid_key(key)
        else None
    )
    if layer is None:
        raise NotFound(f"no layer {key!r} in product {product.key!r}")
    layer.product = product
    return layer
