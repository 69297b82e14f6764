"""Measurements: one value per (metric, unit), loaded in batches and replaced when sent again."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import or_

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lab.db import refresh_statistics_after_commit
from lab.models import Measurement, Metric, Product, Status, Unit
from lab.services.bulk import BatchProblems, Upserted, check_batch_size
from lab.services.units import units_ensure


@dataclass(frozen=True)
class MeasurementRow:
    metric: str
    unit: str
    value: float
    measured_at: datetime | None = None


@transaction.atomic
def measurements_record(*, product: Product, rows: Sequence[MeasurementRow]) -> Upserted:
    """Store each row's value; all rows or none.

    Units are created as needed; a (metric, unit) that has a value already gets the new
    one. A row without `measured_at` is stamped with the time of the request. Any bad row
    (unknown or removed metric, a value that is not finite, the same metric and unit
    twice) refuses the whole batch with a 400 naming every bad row. A `disabled`
    metric still takes values; only a removed one refuses them.

    Five statements whatever the batch size. The units are locked before the stored
    (metric, unit) pairs are counted, so two batches over the same units take turns and
    both answers are exact.
    """
    check_batch_size(count=len(rows), what="measurements")
    metrics = {
        metric.key: metric
        for metric in Metric.objects.filter(product=product, key__in={row.metric for row in rows})
    }
    problems = BatchProblems("measurements")
    first_row_of: dict[tuple[str, str], int] = {}
    valid: list[tuple[Metric, MeasurementRow]] = []
    for index, row in enumerate(rows):
        metric = metrics.get(row.metric)
        if metric is None:
            problems.add(
                index,
                "metric",
                "unknown_metric",
                f"no metric {row.metric!r} in product {product.key!r}",
            )
            continue
        if metric.status == Status.REMOVED:
            problems.add(index, "metric", "removed_metric", f"metric {row.metric!r} is removed")
            continue
        if not math.isfinite(row.value):
            problems.add(index, "value", "not_finite", "value must be a finite number")
            continue
        pair = (row.metric, row.unit)
        if pair in first_row_of:
            problems.add(
                index,
                "unit",
                "duplicate_measurement",
                f"metric {row.metric!r} of unit {row.unit!r} is given already in row "
                f"{first_row_of[pair]}",
            )
            continue
        first_row_of[pair] = index
        valid.append((metric, row))
    problems.raise_if_any()
    if not valid:
        return Upserted(created=0, updated=0)

    unit_ids = units_ensure(product_id=product.id, keys={row.unit for _, row in valid})
    now = timezone.now()
    measurements = sorted(
        (
            Measurement(
                metric=metric,
                unit_id=unit_ids[row.unit],
                value=row.value,
                measured_at=row.measured_at or now,
            )
            for metric, row in valid
        ),
        key=lambda m: (m.metric_id, m.unit_id),
    )
    existing = _existing_count(measurements)
    Measurement.objects.bulk_create(
        measurements,
        update_conflicts=True,
        unique_fields=["metric", "unit"],
        update_fields=["value", "measured_at"],
    )
    refresh_statistics_after_commit(
        tables=(Unit._meta.db_table, Measurement._meta.db_table), changed_rows=len(measurements)
    )
    return Upserted(created=len(measurements) - existing, updated=existing)


def _existing_count(measurements: list[Measurement]) -> int:
    """How many of these (metric, unit) pairs are stored already: one exact query."""
    units_by_metric: dict[int, list[int]] = {}
    for measurement in measurements:
        units_by_metric.setdefault(measurement.metric_id, []).append(measurement.unit_id)
    condition = reduce(
        or_,
        (Q(metric_id=metric_id, unit_id__in=units) for metric_id, units in units_by_metric.items()),
    )
    return Measurement.objects.filter(condition).count()
