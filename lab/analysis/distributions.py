"""Histograms of a metric per variant, counted in the database (for results.svg).

One statement: every measurement is placed in one of ``bins`` equal-width bins over the range
of all the variants' values, with the scaled deviations of ``lab.analysis.moments`` so that
values of any magnitude neither overflow nor underflow. Only the counts reach Python.
"""

from __future__ import annotations

from lab.analysis.common import quoted
from lab.analysis.moments import grouped_moments, hash_join_plan, rows_sql, scaling_for
from lab.analysis.rows import chart_rows
from lab.models import Experiment, Metric, Variant
from lab.replica import connection

BINS = 30


def variant_histograms(
    *, experiment: Experiment, metric: Metric, variants: list[Variant], bins: int = BINS
) -> tuple[list[float], dict[int, list[int]]]:
    """(bin edges, counts per variant id); no edges when nothing is measured."""
    rows = chart_rows(experiment.id, metric, [v.id for v in variants])
    moments = grouped_moments(rows, groups=("k0",))
    if not moments:
        return [], {}
    low = min(m.min for m in moments.values())
    high = max(m.max for m in moments.values())
    if low == high:
        # One value everywhere: a single bin of width 1 around it.
        edges = [low - 0.5, low + 0.5]
        return edges, {key[0]: [m.n] for key, m in moments.items()}
    scaling = scaling_for(low, high)
    y_low = (low - scaling.shift) * scaling.scale
    y_high = (high - scaling.shift) * scaling.scale
    per_unit = bins / (y_high - y_low)
    inner_sql, inner_params = rows_sql(rows)
    k0 = quoted("k0")
    double = "CAST(%s AS DOUBLE PRECISION)"
    y = f"CASE WHEN ABS(r.x - {double}) < {double} THEN 0.0 ELSE (r.x - {double}) * {double} END"
    sql = (
        f"SELECT b.k, b.bin, COUNT(*) FROM (SELECT r.{k0} AS k, "
        f"FLOOR(({y} - {double}) * {double}) AS bin FROM ({inner_sql}) r) b GROUP BY b.k, b.bin"
    )
    params = [
        scaling.shift,
        scaling.negligible,
        scaling.shift,
        scaling.scale,
        y_low,
        per_unit,
    ]
    counts = {key[0]: [0] * bins for key in moments}
    with hash_join_plan(), connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        for variant_id, index, count in cursor.fetchall():
            # The largest value falls on the upper edge: it belongs to the last bin.
            position = min(max(int(index), 0), bins - 1)
            counts[variant_id][position] += int(count)
    width = (high / 2 - low / 2) / bins * 2
    edges = [low + i * width for i in range(bins)] + [high]
    return edges, counts
