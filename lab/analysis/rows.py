"""The measurement rows each analysis aggregates, as SQL selects for ``lab.analysis.moments``.

Hand-written rather than ORM joins for one reason: a measurement is joined to its unit's
assignments directly on ``unit_id``. The ORM's path (measurement → unit → assignment) adds a
join with the whole unit table, which doubles the cost of a pass at 10^6 measurements.
"""

from __future__ import annotations

from django.db import connection

from lab.analysis.spec import in_spec_sql
from lab.models import Assignment, Measurement, Metric, Unit


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _in_spec_column() -> str:
    rule = in_spec_sql("m.value", "mt.lower_limit", "mt.upper_limit")
    return f"CASE WHEN {rule} THEN 1 ELSE 0 END"


def _placeholders(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def experiment_rows(experiment_id: int, metric_ids: list[int]) -> tuple[str, list]:
    """Every measurement of the listed metrics (the product's live ones) on a unit assigned
    in the experiment: ``metric_key``, ``variant_key`` (the unit's variant), ``x``,
    ``in_spec`` (1 or 0). The metric ids are listed so that the measurements are read
    through the (metric, …) indexes, never the other products' rows."""
    sql = (
        f"SELECT m.metric_id AS metric_key, a.variant_id AS variant_key, m.value AS x, "
        f"{_in_spec_column()} AS in_spec "
        f"FROM {_table(Measurement)} m "
        f"JOIN {_table(Assignment)} a ON a.unit_id = m.unit_id "
        f"JOIN {_table(Metric)} mt ON mt.id = m.metric_id "
        f"WHERE a.experiment_id = %s AND m.metric_id IN ({_placeholders(metric_ids)})"
    )
    return sql, [experiment_id, *metric_ids]


def factorial_rows(metric: Metric, factors: list[tuple[int, list[int]]]) -> tuple[str, list]:
    """Measurements of the metric on units assigned to one of the listed variants in every
    experiment: ``k0``…``k{n-1}`` (the variant in each), ``x``, ``in_spec``. The metric's
    limits are parameters (one metric), so the metric table is not joined."""
    joins, columns, params = [], [], []
    for i, (experiment_id, variant_ids) in enumerate(factors):
        joins.append(
            f"JOIN {_table(Assignment)} a{i} ON a{i}.unit_id = m.unit_id "
            f"AND a{i}.experiment_id = %s AND a{i}.variant_id IN ({_placeholders(variant_ids)})"
        )
        columns.append(f"a{i}.variant_id AS k{i}")
        params.extend([experiment_id, *variant_ids])
    limit = "CAST(%s AS DOUBLE PRECISION)"
    in_spec = f"CASE WHEN {in_spec_sql('m.value', limit, limit)} THEN 1 ELSE 0 END"
    limits = [metric.lower_limit] * 2 + [metric.upper_limit] * 2
    sql = (
        f"SELECT {', '.join(columns)}, m.value AS x, {in_spec} AS in_spec "
        f"FROM {_table(Measurement)} m {' '.join(joins)} WHERE m.metric_id = %s"
    )
    return sql, [*limits, *params, metric.id]


def chart_rows(
    experiment_id: int, metric_id: int, variant_ids: list[int], *, product_id: int | None = None
) -> tuple[str, list]:
    """Measurements of the metric on units of the listed variants: ``k0`` (variant), ``x``,
    and, given the ``product_id`` of the units, what orders them: ``t`` (measured_at), ``u``
    (unit key). Without it, no join with the units (the moments need no order)."""
    if not variant_ids:
        variant_ids = [0]  # no variant: no row (ids start at 1)
    ordered = product_id is not None
    order_columns = ", m.measured_at AS t, un.key AS u" if ordered else ""
    # The product's units only, through the unique (product, key) index.
    unit_join = (
        f"JOIN {_table(Unit)} un ON un.id = m.unit_id AND un.product_id = %s " if ordered else ""
    )
    sql = (
        f"SELECT a.variant_id AS k0, m.value AS x{order_columns} "
        f"FROM {_table(Measurement)} m "
        f"JOIN {_table(Assignment)} a ON a.unit_id = m.unit_id "
        f"{unit_join}"
        f"WHERE m.metric_id = %s AND a.experiment_id = %s "
        f"AND a.variant_id IN ({_placeholders(variant_ids)})"
    )
    return sql, [*([product_id] if ordered else []), metric_id, experiment_id, *variant_ids]
