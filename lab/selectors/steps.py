from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import Product, Step
from lab.selectors.common import visible
from rules.keys import is_valid_key


def step_list(*, product: Product, status: str | None = None) -> QuerySet[Step]:
    """The product's steps in process order."""
    return visible(Step.objects.filter(product=product), status).order_by("position", "id")


def step_get(*, product: Product, key: str) -> Step:
    step = Step.objects.filter(product=product, key=key).first() if is_valid_key(key) else None
    if step is None:
        raise NotFound(f"no step {key!r} in product {product.key!r}")
    step.product = product
    return step
