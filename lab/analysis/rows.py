"""The measurement rows each analysis aggregates, as SQL selects for ``lab.analysis.moments``.

Hand-written rather than ORM joins for two reasons. A measurement is joined to its unit's
assignments directly on ``unit_id``: the ORM's path (measurement → unit → assignment) adds a
join with the whole unit table to every pass, which reads nothing the analysis needs. And the
measurements are read one select per metric (``UNION ALL``), with that metric's limits as
parameters of its select: the in-spec flag needs no join with the metric table, and an
analysis can compute further per-row columns with each metric's own constants (the one pass
of ``lab.analysis.moments``), which PostgreSQL folds into the scan of that metric's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lab.analysis.common import table
from lab.analysis.spec import in_spec_sql
from lab.models import Assignment, Measurement, Metric, Unit
from lab.replica import connection

# A per-row column computed per metric: its SQL over ``m.value`` and its parameters.
Column = Callable[[Metric], tuple[str, Sequence]]


def _placeholders(values: list) -> str:
    return ", ".join(["%s"] * len(values))


def measurements_of(
    metrics: Sequence[Metric], columns: Mapping[str, Column] | None = None
) -> tuple[str, list]:
    """The measurements of the listed metrics as one relation: ``metric_id``, ``unit_id``,
    ``measured_at``, ``value``, ``in_spec`` (1 or 0 against the metric's limits, the rule of
    ``lab.analysis.spec``) and the named ``columns``, one select per metric. Each select reads
    one metric's rows through the (metric, …) indexes, never another product's."""
    limit = "CAST(%s AS DOUBLE PRECISION)"
    in_spec = f"CASE WHEN {in_spec_sql('m.value', limit, limit)} THEN 1 ELSE 0 END"
    selects, params = [], []
    for metric in metrics:
        extra = []
        params.extend([metric.lower_limit] * 2 + [metric.upper_limit] * 2)
        for name, column in (columns or {}).items():
            expression, column_params = column(metric)
            extra.append(f", {expression} AS {connection.ops.quote_name(name)}")
            params.extend(column_params)
        selects.append(
            f"SELECT m.metric_id, m.unit_id, m.measured_at, m.value, {in_spec} AS in_spec"
            f"{''.join(extra)} FROM {table(Measurement)} m WHERE m.metric_id = %s"
        )
        params.append(metric.id)
    return " UNION ALL ".join(selects), params


@dataclass(frozen=True)
class Rows:
    """A select over the measurements ``m`` of ``metrics`` (``measurements_of``): the select
    list ``columns`` (no parameters), then the joins and conditions ``joins`` with their
    ``params``. ``sql`` adds the named per-metric ``extra`` columns of the measurements to the
    select list."""

    columns: str
    joins: str
    params: tuple
    metrics: tuple[Metric, ...] = field(default_factory=tuple)

    def sql(self, extra: Mapping[str, Column] | None = None) -> tuple[str, tuple]:
        source, source_params = measurements_of(self.metrics, extra)
        carried = "".join(
            f", m.{connection.ops.quote_name(name)} AS {connection.ops.quote_name(name)}"
            for name in extra or {}
        )
        return (
            f"SELECT {self.columns}{carried} FROM ({source}) m {self.joins}",
            (*source_params, *self.params),
        )


def experiment_rows(experiment_id: int, metrics: Sequence[Metric]) -> Rows:
    """Every measurement of the listed metrics (the product's live ones) on a unit assigned
    in the experiment: ``metric_key``, ``variant_key`` (the unit's variant), ``x``,
    ``in_spec`` (1 or 0)."""
    return Rows(
        columns="m.metric_id AS metric_key, a.variant_id AS variant_key, m.value AS x, "
        "m.in_spec AS in_spec",
        joins=f"JOIN {table(Assignment)} a ON a.unit_id = m.unit_id WHERE a.experiment_id = %s",
        params=(experiment_id,),
        metrics=tuple(metrics),
    )


def factorial_rows(metric: Metric, factors: list[tuple[int, list[int]]]) -> Rows:
    """Measurements of the metric on units assigned to one of the listed variants in every
    experiment: ``k0``…``k{n-1}`` (the variant in each), ``x``, ``in_spec``."""
    joins, columns, params = [], [], []
    for i, (experiment_id, variant_ids) in enumerate(factors):
        joins.append(
            f"JOIN {table(Assignment)} a{i} ON a{i}.unit_id = m.unit_id "
            f"AND a{i}.experiment_id = %s AND a{i}.variant_id IN ({_placeholders(variant_ids)})"
        )
        columns.append(f"a{i}.variant_id AS k{i}")
        params.extend([experiment_id, *variant_ids])
    return Rows(
        columns=f"{', '.join(columns)}, m.value AS x, m.in_spec AS in_spec",
        joins=" ".join(joins),
        params=tuple(params),
        metrics=(metric,),
    )


def chart_rows(
    experiment_id: int, metric: Metric, variant_ids: list[int], *, product_id: int | None = None
) -> Rows:
    """Measurements of the metric on units of the listed variants: ``k0`` (variant), ``x``,
    and, given the ``product_id`` of the units, what orders them: ``t`` (measured_at), ``u``
    (unit key). Without it, no join with the units (the moments need no order)."""
    if not variant_ids:
        variant_ids = [0]  # no variant: no row (ids start at 1)
    ordered = product_id is not None
    order_columns = ", m.measured_at AS t, un.key AS u" if ordered else ""
    # The product's units only, through the unique (product, key) index.
    unit_join = (
        f"JOIN {table(Unit)} un ON un.id = m.unit_id AND un.product_id = %s " if ordered else ""
    )
    return Rows(
        columns=f"a.variant_id AS k0, m.value AS x{order_columns}",
        joins=(
            f"JOIN {table(Assignment)} a ON a.unit_id = m.unit_id "
            f"{unit_join}"
            f"WHERE a.experiment_id = %s AND a.variant_id IN ({_placeholders(variant_ids)})"
        ),
        params=(*([product_id] if ordered else []), experiment_id, *variant_ids),
        metrics=(metric,),
    )
