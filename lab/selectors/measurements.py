from django.db.models import BooleanField, Case, F, Q, QuerySet, Value, When

from lab.models import Measurement, Product, Status

# Within the metric's closed limits (a missing limit is unbounded); null without limits.
# The same definition as the `yield` of the results.
IN_SPEC = Case(
    When(Q(metric__lower_limit__isnull=True, metric__upper_limit__isnull=True), then=Value(None)),
    When(
        (Q(metric__lower_limit__isnull=True) | Q(value__gte=F("metric__lower_limit")))
        & (Q(metric__upper_limit__isnull=True) | Q(value__lte=F("metric__upper_limit"))),
        then=Value(True),
    ),
    default=Value(False),
    output_field=BooleanField(null=True),
)


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
