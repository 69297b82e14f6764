"""Individuals and moving-range (I-MR) control charts per variant (docs/results.md §12).

For each variant, its measurements of the metric in the order they were taken
(``measured_at``, then unit key to break ties): ``center`` = the mean, ``mr_bar`` = the mean
moving range |x_i − x_{i−1}|, control limits ``center ± 3·mr_bar/d2`` (d2 = 1.128) and the
moving-range limit ``D4·mr_bar`` (D4 = 3.267), as in the NIST/SEMATECH e-Handbook §6.3.2.2.
``beyond_limits`` counts points outside [lcl, ucl], ``longest_run`` the most consecutive
points strictly on one side of the center, and ``stable`` is no point beyond the limits and
no run of 9 or more.

All in the database: the exact moments (``lab.analysis.moments``), then per variant one
statement over a single sort in chart order: the moving ranges with ``LAG``, the runs with
``ROW_NUMBER`` and a running ``MAX`` of the rows where the side changes, and the count beyond
the limits (computed there with the same double arithmetic as here). Moving ranges are taken
of the scaled deviations of ``lab.analysis.moments``, so extreme values neither overflow nor
lose digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.analysis.common import finite, quoted
from lab.analysis.moments import Moments, grouped_moments, hash_join_plan, rows_sql, scaling_for
from lab.analysis.rows import chart_rows
from lab.models import Experiment, Metric, Status, Variant
from lab.replica import connection

D2 = 1.128
D4 = 3.267
RUN_LIMIT = 9


@dataclass(frozen=True)
class Chart:
    n: int
    center: float | None
    mr_bar: float | None
    ucl: float | None
    lcl: float | None
    mr_ucl: float | None
    beyond_limits: int | None
    longest_run: int | None
    stable: bool | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def shown_variants(experiment: Experiment, moments: dict[tuple, Moments]) -> list[Variant]:
    """Variants that are not removed, and removed ones with measurements (as in the
    results report), in creation order."""
    variants = list(experiment.variants.order_by("id"))
    measured = {key[0] for key in moments}
    return [v for v in variants if v.status != Status.REMOVED or v.id in measured]


def control_charts(*, experiment: Experiment, metric: Metric) -> dict:
    variants = list(experiment.variants.order_by("id"))
    variant_ids = [v.id for v in variants]
    # The moments and the count beyond the limits need no order: no join with the units.
    rows = chart_rows(experiment.id, metric, variant_ids)
    moments = grouped_moments(rows, groups=("k0",))
    inner_sql, inner_params = rows_sql(rows)
    # One window statement per variant: each sorts one variant's history, so that none of
    # them approaches the statement timeout when the experiment has 10^6 measurements.
    ranges: dict[tuple, tuple] = {}
    for key, m in moments.items():
        if m.n < 2:
            continue
        ordered = chart_rows(experiment.id, metric, [key[0]], product_id=experiment.product_id)
        with hash_join_plan():
            ranges |= _moving_ranges_and_runs(*rows_sql(ordered), {key: m})

    charts: dict[int, Chart] = {}
    limits = {}
    for key, m in moments.items():
        if m.n < 2:
            charts[key[0]] = Chart(1, m.mean, None, None, None, None, None, 0, None)
            continue
        mr_bar, longest_run, *_ = ranges.get(key, (0.0, 0))
        ucl = finite(m.mean + 3.0 * mr_bar / D2)
        lcl = finite(m.mean - 3.0 * mr_bar / D2)
        charts[key[0]] = Chart(
            m.n, m.mean, finite(mr_bar), ucl, lcl, finite(D4 * mr_bar), None, longest_run, None
        )
        if ucl is not None and lcl is not None:
            limits[key] = (lcl, ucl)
    # The window statement also counted the points beyond the limits it computed with the
    # same double arithmetic; a separate count only where it could not (limits near the
    # largest double).
    beyond = {
        key: count for key, (*_, bounds, count) in ranges.items() if bounds == limits.get(key)
    }
    rest = {key: bounds for key, bounds in limits.items() if key not in beyond}
    if rest:
        with hash_join_plan():
            beyond |= _beyond_limits(inner_sql, inner_params, rest)
    for key in limits:
        chart = charts[key[0]]
        count = beyond.get(key, 0)
        charts[key[0]] = Chart(
            **{
                **chart.__dict__,
                "beyond_limits": count,
                "stable": count == 0 and chart.longest_run < RUN_LIMIT,
            }
        )

    empty = Chart(0, None, None, None, None, None, None, None, None)
    return {
        "experiment": experiment.key,
        "metric": metric.key,
        "variants": {
            v.key: charts.get(v.id, empty).as_dict() for v in shown_variants(experiment, moments)
        },
    }


def _constants(groups: dict[tuple, tuple]) -> tuple[str, list]:
    width = len(next(iter(groups.values())))
    row = "(CAST(%s AS BIGINT)" + ", CAST(%s AS DOUBLE PRECISION)" * width + ")"
    params: list = []
    for key, constants in groups.items():
        params.extend([key[0], *constants])
    return ", ".join([row] * len(groups)), params


def _moving_ranges_and_runs(
    inner_sql: str, inner_params: tuple, moments: dict[tuple, Moments]
) -> dict[tuple, tuple]:
    """Per variant: the mean moving range, the longest run on one side of the center, the
    control limits (``None`` where they could come near the largest double) and the number
    of points beyond them."""
    if not moments:
        return {}
    scalings = {key: scaling_for(m.min, m.max) for key, m in moments.items()}
    values, params = _constants(
        {
            key: (scaling.shift, scaling.scale, scaling.negligible, moments[key].mean)
            for key, scaling in scalings.items()
        }
    )
    k0, t, u = quoted("k0"), quoted("t"), quoted("u")
    # One sort, one window (partition by variant, in chart order), computed in two levels
    # over the same order: y is the scaled deviation of lab.analysis.moments (no overflow, no
    # underflow); side is +1 above the center, −1 below, 0 on it (a point on the center ends
    # a run); a run starts where the side changes, and the longest run is the largest
    # distance from a row to the start of its run (rn − start + 1) on a side other than 0.
    side = "CASE WHEN r.x > g.center THEN 1 WHEN r.x < g.center THEN -1 ELSE 0 END"
    window = "WINDOW w AS (PARTITION BY v.k ORDER BY v.t, v.u)"
    constants = (
        "SELECT column1 AS k, column2 AS c, column3 AS s, column4 AS eps, column5 AS center "
        f"FROM (VALUES {values}) v"
    )
    # The limits as control_charts computes them (center ± 3·mr_bar/d2, in doubles), where
    # no sum can overflow; then the points beyond them, from the same rows.
    width = "3.0 * l.mr_bar / CAST(%s AS DOUBLE PRECISION)"
    safe = (
        f"ABS(l.center) < CAST(%s AS DOUBLE PRECISION) AND {width} < CAST(%s AS DOUBLE PRECISION)"
    )
    sql = (
        # The constants inline (a CTE read twice would keep the join out of the workers).
        "WITH o AS MATERIALIZED (SELECT v.k, v.x, v.side, v.mr, v.rn, "
        "MAX(CASE WHEN v.starts = 1 THEN v.rn END) OVER "
        f"(PARTITION BY v.k ORDER BY v.t, v.u ROWS UNBOUNDED PRECEDING) AS start FROM ("
        "SELECT v.k, v.x, v.t, v.u, v.side, ABS(v.y - LAG(v.y) OVER w) AS mr, "
        "ROW_NUMBER() OVER w AS rn, "
        "CASE WHEN LAG(v.side) OVER w = v.side THEN 0 ELSE 1 END AS starts "
        f"FROM (SELECT r.{k0} AS k, r.x, r.{t} AS t, r.{u} AS u, {side} AS side, "
        "CASE WHEN ABS(r.x - g.c) < g.eps THEN 0.0 ELSE (r.x - g.c) * g.s END AS y "
        f"FROM ({inner_sql}) r JOIN ({constants}) g ON r.{k0} = g.k) v {window}) v), "
        "a AS (SELECT o.k, SUM(o.mr) AS total, COUNT(o.mr) AS n, "
        "MAX(CASE WHEN o.side <> 0 THEN o.rn - o.start + 1 END) AS run FROM o GROUP BY o.k), "
        "l AS (SELECT a.*, g.center, a.total / a.n / g.s AS mr_bar "
        f"FROM a JOIN ({constants}) g ON g.k = a.k "
        "WHERE a.n > 0), "
        f"b AS (SELECT l.k, l.total, l.n, l.run, CASE WHEN {safe} THEN l.center - {width} END "
        f"AS lcl, CASE WHEN {safe} THEN l.center + {width} END AS ucl FROM l) "
        "SELECT b.k, b.total, b.n, b.run, b.lcl, b.ucl, c.beyond FROM b LEFT JOIN ("
        "SELECT o.k, COUNT(*) AS beyond FROM o JOIN b ON b.k = o.k "
        "WHERE o.x < b.lcl OR o.x > b.ucl GROUP BY o.k) c ON c.k = b.k"
    )
    big = math.ldexp(1.0, 1020)
    limit_params = [big, D2, big, D2] * 2
    with connection.cursor() as cursor:
        cursor.execute(sql, [*inner_params, *params, *params, *limit_params])
        result = {}
        for k, total, count, run, lcl, ucl, beyond in cursor.fetchall():
            scale = scalings[(k,)].scale
            mr_bar = float(total) / int(count) / scale if count else 0.0
            bounds = (float(lcl), float(ucl)) if lcl is not None and ucl is not None else None
            result[(k,)] = (mr_bar, int(run or 0), bounds, int(beyond or 0))
        return result


def _beyond_limits(
    inner_sql: str, inner_params: tuple, limits: dict[tuple, tuple[float, float]]
) -> dict[tuple, int]:
    if not limits:
        return {}
    values, params = _constants(limits)
    k0 = quoted("k0")
    sql = (
        f"WITH l(k, lcl, ucl) AS (VALUES {values}) "
        f"SELECT r.{k0}, COUNT(*) FROM ({inner_sql}) r JOIN l ON r.{k0} = l.k "
        f"WHERE r.x < l.lcl OR r.x > l.ucl GROUP BY r.{k0}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        return {(k,): int(count) for k, count in cursor.fetchall()}


def chart_points(
    *, experiment: Experiment, metric: Metric, variant: Variant, limit: int
) -> tuple[list[float], int]:
    """The latest ``limit`` values of one variant in chart order, and how many there are
    in all (for the plot; the statistics above never load rows)."""
    sql, params = chart_rows(
        experiment.id, metric, [variant.id], product_id=experiment.product_id
    ).sql()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM ({sql}) r", params)
        total = int(cursor.fetchone()[0])
        cursor.execute(
            f"SELECT r.x FROM ({sql}) r ORDER BY r.t DESC, r.u DESC LIMIT %s", [*params, limit]
        )
        latest = [float(row[0]) for row in cursor.fetchall()]
    return list(reversed(latest)), total
