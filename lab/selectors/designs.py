from django.db.models import Prefetch, QuerySet

from lab.errors import NotFound
from lab.models import Design, DesignFactor, Product
from lab.selectors.common import visible
from rules.designs import Fraction
from rules.keys import is_valid_key

_FACTORS = Prefetch(
    "factors",
    queryset=DesignFactor.objects.select_related("experiment", "low", "high").order_by("position"),
    to_attr="factor_list",
)


def design_list(*, product: Product, status: str | None = None) -> QuerySet[Design]:
    return (
        visible(Design.objects.filter(product=product), status)
        .prefetch_related(_FACTORS)
        .order_by("id")
    )


def design_get(*, product: Product, key: str) -> Design:
    design = (
        Design.objects.filter(product=product, key=key).prefetch_related(_FACTORS).first()
        if is_valid_key(key)
        else None
    )
    if design is None:
        raise NotFound(f"no design {key!r} in product {product.key!r}")
    design.product = product
    return design


def design_fraction(design: Design) -> Fraction:
    """The stored fraction: rebuilt from the generators saved at creation."""
    factors = getattr(design, "factor_list", None)
    count = len(factors) if factors is not None else design.factors.count()
    return Fraction.from_generators(count, design.runs, design.generators)
