from django.db.models import Prefetch, QuerySet

from lab.errors import NotFound
from lab.models import Assignment, Measurement, Product, Status, Unit
from lab.selectors.measurements import with_in_spec


def unit_list(*, product: Product) -> QuerySet[Unit]:
    return Unit.objects.filter(product=product).order_by("id")


def unit_get(*, product: Product, key: str) -> Unit:
    unit = Unit.objects.filter(product=product, key=key).first()
    if unit is None:
        raise NotFound(f"no unit {key!r} in product {product.key!r}")
    return unit


def unit_detail(*, product: Product, key: str) -> Unit:
    """The unit with its assignments and measurements (`unit.assignment_list`,
    `unit.measurement_list`): three queries.

    Like every listing, they leave out what belongs to a removed experiment or metric.
    """
    assignments = (
        Assignment.objects.select_related("experiment", "variant")
        .exclude(experiment__status=Status.REMOVED)
        .order_by("experiment_id")
    )
    measurements = with_in_spec(
        Measurement.objects.select_related("metric")
        .exclude(metric__status=Status.REMOVED)
        .order_by("metric_id")
    )
    unit = (
        Unit.objects.filter(product=product, key=key)
        .prefetch_related(
            Prefetch("assignments", queryset=assignments, to_attr="assignment_list"),
            Prefetch("measurements", queryset=measurements, to_attr="measurement_list"),
        )
        .first()
    )
    if unit is None:
        raise NotFound(f"no unit {key!r} in product {product.key!r}")
    return unit
