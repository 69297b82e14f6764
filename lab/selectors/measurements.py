from django.db.models import QuerySet

from lab.analysis.spec import IN_SPEC
from lab.models import Measurement, Product, Status


def with_in_spec(queryset: QuerySet[Measurement]) -> QuerySet[Measurement]:
    return queryset.annotate(in_spec=IN_SPEC)


def measurement_list(
    *, product: Product, metric: str | None = None, unit: str | None = None
) -> QuerySet[Measurement]:
    """A product's measurements, oldest first; those of removed metrics only when the
    metric is asked for by key."""
    measurements = Measurement.objects.filter(metric__product=product)
    if metric is None:
        measurements = measurements.exclude(metric__status=Status.REMOVED)
    else:
        measurements = measurements.filter(metric__key=metric)
    if unit is not None:
        measurements = measurements.filter(unit__key=unit)
    return with_in_spec(measurements.select_related("metric", "unit").order_by("id"))
