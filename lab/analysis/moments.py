"""Per-group moments aggregated in the database, exact to what doubles allow.

A plain ``AVG``/``VAR_POP`` (or ``SUM(x)``, ``SUM(x*x)``) loses digits on the data engineers
produce: a frequency near 1e9 Hz with a spread of 1e-3 keeps almost none, ten readings of a
gauge all ``0.1`` get a spread of 1e-17, values beyond 1e154 overflow their squares and values
below 1e-150 underflow them. Instead, every group (a variant of a metric, a cell of a
factorial) is aggregated in two statements over the same rows (docs/results.md §9):

1. ``COUNT``, ``MIN``, ``MAX`` (and the caller's extra sums, e.g. the in-spec count). None of
   them can lose a digit or overflow.
2. With a shift ``c`` = the group's mid-range and an exact power-of-two scale ``s`` that brings
   the largest deviation to at most 1, per row ``y = (x − c)·s``, then ``Σy²`` and ``Σy``. The
   deviations are small, so nothing overflows or underflows. Both sums are exact: ``z = y·2^40``
   (and ``y²·2^40``) is split into an integer part (summed as a 64-bit integer — exact) and a
   fractional part (whose rounding is ~2^-40 of the spread). Deviations below 2^-500 of the
   spread are taken as 0 (PostgreSQL refuses a product that underflows; their contribution is
   far below the last digit of any result).

Then ``mean = c + Σy/(n·s)`` (correctly rounded, with the rounding error kept as
``mean_error`` so that differences of means keep their digits) and the sum of squared
deviations ``Σy² − (Σy)²/n``, in rational arithmetic from the exact sums, scaled back by
``1/s²``. What is left is the rounding of each ``x − c``: harmless while the mean is near
``c``, but amplified by ``√(n·(mean − c)²/SS)`` when it is far from it (most values at one end
of the range: a skewed group). Such a group is summed once more about its own mean
(``_recentred``), which makes the spread exact to a few units of the last digit whatever
the skew. A group whose values are all equal has ``std`` exactly 0: ``MIN = MAX`` says so.

The statements use only ``COUNT``/``MIN``/``MAX``/``SUM``, ``CASE`` and ``CAST`` (portable
between SQLite and PostgreSQL), two per call whatever the number of rows or groups. On
PostgreSQL the constants come from each metric's range instead (an index lookup), so that
one pass sums everything; the groups it cannot keep exactly get the second pass
(``_one_pass``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction

from django.db import transaction
from django.db.models import QuerySet

from lab.analysis.common import quoted
from lab.analysis.rows import Column, Rows
from lab.models import Measurement
from lab.replica import connection

# z = y·2^40 has an integer part below 2^41 in magnitude: a 64-bit integer sum of 2^22 of them
# cannot overflow on SQLite (PostgreSQL sums bigints as numeric, which never overflows).
_SPLIT_BITS = 40
# Exponent bounds that keep every per-group constant a normal double (exact, and accepted by
# PostgreSQL's float8 input).
_SCALE_LIMIT = 1000
_NEGLIGIBLE_BITS = 500
_MIN_NORMAL_EXPONENT = -1022
# When n·(mean − c)² exceeds this multiple of its sum of squares, the rounding of x − c could cost
# more than a few units of the last digit of the spread: it is summed again about its mean.
_RECENTRE_RATIO = 16.0
# How much coarser than a group's own scale the one pass's metric scale may be, and how much
# wider than the group's own bound its deviations from the metric's shift (_one_pass).
_SLACK_BITS = 11
_WIDER_BITS = 1


# The plan settings of every analysis statement on PostgreSQL (hash_join_plan), for the
# enclosing transaction only.
PLAN_SETTINGS = {
    # Nested loops of index lookups were the never-analyzed planner's choice: 20 s a pass.
    "enable_nestloop": "off",
    # A grouped aggregate after a sort of 10^6 rows (what the planner picks when it guesses a
    # few thousand rows) is slower than a hash aggregate of the few groups.
    "enable_sort": "off",
    # Compiling the per-row expressions cost more (0.2–0.5 s a statement) than it saved.
    "jit": "off",
    # The hash of 10^6 assignments (the factorial) and the sort of the control chart fit in
    # memory instead of spilling to disk in batches.
    "work_mem": "64MB",
    # A parallel plan whatever the row estimates: the join and a partial aggregate run in the
    # workers, and only the few grouped rows cross to the leader.
    # (The scan of an experiment's measurements through an index is guessed at a few pages,
    # below the size from which a scan would be split between workers.)
    "parallel_setup_cost": "0",
    "parallel_tuple_cost": "0.01",
    "min_parallel_table_scan_size": "0",
    "min_parallel_index_scan_size": "0",
}


@contextmanager
def hash_join_plan() -> Iterator[None]:
    """Run the enclosed analysis statements with the plan of ``PLAN_SETTINGS`` on PostgreSQL.

    An analysis reads every measurement of an experiment or metric: the right plan scans them
    once, in parallel, and hash-joins the assignments of the experiment. On tables PostgreSQL
    has never analyzed (a fresh restore, a bulk import with autovacuum behind or off) its
    estimates are guesses and it picks nested loops of index lookups instead: 20 s per pass
    at 10^6 rows instead of about 1 s (docs/results.md §9). The settings make the plan
    independent of the statistics; one ``set_config`` statement sets them until the end of
    the transaction this opens (or of the enclosing one, when the analysis runs inside a
    transaction).
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            calls = ", ".join(["set_config(%s, %s, true)"] * len(PLAN_SETTINGS))
            cursor.execute(
                f"SELECT {calls}", [item for pair in PLAN_SETTINGS.items() for item in pair]
            )
        yield


@dataclass(frozen=True)
class Moments:
    """One group's aggregates. ``mean + mean_error`` is the exact mean to about twice the
    precision of a double; ``sum_sq`` is Σ(x − mean)² (``inf`` when it does not fit a
    double although ``std`` may); ``std`` is the sample standard deviation (n − 1), ``None``
    below two values or beyond the largest double; ``sums`` holds the caller's extra sums."""

    n: int
    mean: float
    mean_error: float
    std: float | None
    sum_sq: float
    min: float
    max: float
    sums: dict[str, int]


@dataclass(frozen=True)
class _Scaling:
    shift: float  # c
    scale: float  # s = 2^-e, e clamped: y = (x − c)·s
    split: float  # t: z = y·t, with |z| ≤ 2^40
    negligible: float  # |x − c| below this counts as 0
    square_split: float = 2.0**_SPLIT_BITS  # y²·t2 ≤ 2^40


RowsLike = QuerySet | tuple[str, Sequence] | Rows


def rows_sql(rows: RowsLike) -> tuple[str, tuple]:
    """The SQL and parameters of ``Rows``, a ``values()`` queryset, or an ``(sql, params)``
    pair."""
    if isinstance(rows, Rows):
        return rows.sql()
    if isinstance(rows, QuerySet):
        return rows.query.get_compiler(using=rows.db).as_sql()
    sql, params = rows
    return sql, tuple(params)


def grouped_moments(
    rows: RowsLike,
    *,
    groups: Sequence[str],
    sums: Sequence[str] = (),
) -> dict[tuple, Moments]:
    """Moments of column ``x`` of ``rows`` per distinct value of the ``groups`` columns.

    ``rows`` names the (integer) group columns, ``x`` (the value) and the integer columns
    listed in ``sums``. Groups without rows are absent. Given ``Rows`` (``lab.analysis.rows``)
    on PostgreSQL, the one pass of ``_one_pass``: each metric's own range (an index lookup)
    gives the shift and scale; with several metrics, ``metric_key`` (the metric id) must be a
    group column.
    """
    with hash_join_plan():
        return _grouped_moments(rows, groups, sums)


def _grouped_moments(rows: RowsLike, groups: Sequence[str], sums: Sequence[str]) -> dict:
    if connection.vendor == "postgresql" and isinstance(rows, Rows) and rows.metrics:
        return _one_pass(rows, groups, sums)
    inner_sql, inner_params = rows_sql(rows)
    keys = ", ".join(f"r.{quoted(name)}" for name in groups)
    extra = "".join(f", SUM(r.{quoted(name)})" for name in sums)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {keys}, COUNT(*), MIN(r.x), MAX(r.x){extra} "
            f"FROM ({inner_sql}) r GROUP BY {keys}",
            inner_params,
        )
        first = cursor.fetchall()
    width = len(groups)
    scalings = {
        tuple(row[:width]): scaling_for(float(row[width + 1]), float(row[width + 2]))
        for row in first
        if row[width + 1] != row[width + 2]
    }
    second = _deviation_sums(inner_sql, inner_params, groups, scalings) if scalings else {}

    result = {}
    for row in first:
        key = tuple(row[:width])
        n, low, high = int(row[width]), float(row[width + 1]), float(row[width + 2])
        extras = {name: int(value or 0) for name, value in zip(sums, row[width + 3 :], strict=True)}
        if key in scalings:
            moments = _combine(n, scalings[key], *second[key], low, high)
        else:
            # Every value equal: the mean is that value and the spread exactly 0.
            moments = Moments(n, low, 0.0, 0.0 if n >= 2 else None, 0.0, low, high, {})
        result[key] = replace(moments, sums=extras)
    return _recentred(inner_sql, inner_params, groups, result, scalings)


def _recentred(
    inner_sql: str,
    inner_params: tuple,
    groups: Sequence[str],
    result: dict[tuple, Moments],
    scalings: dict[tuple, _Scaling],
) -> dict[tuple, Moments]:
    """``result`` with the skewed groups (``_skewed``) summed once more with their own mean
    as the shift: one more statement, only when some group needs it."""
    again = {
        key: scaling_for(m.min, m.max, shift=m.mean)
        for key, m in result.items()
        if key in scalings and _skewed(m, scalings[key])
    }
    if not again:
        return result
    sums = _deviation_sums(inner_sql, inner_params, groups, again)
    for key, scaling in again.items():
        m = result[key]
        result[key] = replace(_combine(m.n, scaling, *sums[key], m.min, m.max), sums=m.sums)
    return result


def _skewed(moments: Moments, scaling: _Scaling) -> bool:
    """Whether the rounding of ``x − c`` could cost the spread more than a few units of its
    last digit: n·(mean − c)² above ``_RECENTRE_RATIO`` times the sum of squares."""
    if moments.n < 2 or not math.isfinite(moments.sum_sq):
        return False
    offset = (
        Fraction(moments.mean) + Fraction(moments.mean_error) - Fraction(scaling.shift)
    ) * Fraction(scaling.scale)
    squares = Fraction(moments.sum_sq) * Fraction(scaling.scale) ** 2
    return moments.n * offset * offset > _RECENTRE_RATIO * squares


def _deviation_columns(
    ranges: dict[int, tuple[float, float]], constants: dict[int, tuple[_Scaling, int]]
) -> dict[str, Column]:
    """The per-row terms of the one pass, computed in each metric's own select with that
    metric's constants (literals PostgreSQL folds into the scan): y = (x − c)·s, and of
    z = y·t its integer part ``q_zi`` and fractional part ``q_zf`` (as in ``_deviation_sums``),
    and of y²·t2 its parts ``q_z2i`` and ``q_z2f``. A value outside its metric's range
    (measured after the range was read) is left out of the sums: its group's MIN or MAX shows
    it, and the group is summed again by the second pass."""
    double = "CAST(%s AS DOUBLE PRECISION)"
    y = (
        f"(CASE WHEN m.value < {double} OR m.value > {double} THEN 0.0 "
        f"WHEN ABS(m.value - {double}) < {double} THEN 0.0 "
        f"ELSE (m.value - {double}) * {double} END)"
    )
    z = f"({y} * {double})"
    z2 = f"({y} * {y} * {double})"

    def y_params(metric_id: int) -> list:
        low, high = ranges[metric_id]
        scaling = constants[metric_id][0]
        return [low, high, scaling.shift, scaling.negligible, scaling.shift, scaling.scale]

    def z_params(metric_id: int) -> list:
        return [*y_params(metric_id), constants[metric_id][0].split]

    def z2_params(metric_id: int) -> list:
        return [*y_params(metric_id), *y_params(metric_id), constants[metric_id][0].square_split]

    return {
        "q_zi": lambda metric: (f"CAST({z} AS BIGINT)", z_params(metric.id)),
        "q_zf": lambda metric: (
            f"{z} - CAST(CAST({z} AS BIGINT) AS DOUBLE PRECISION)",
            [*z_params(metric.id), *z_params(metric.id)],
        ),
        "q_z2i": lambda metric: (f"CAST({z2} AS BIGINT)", z2_params(metric.id)),
        "q_z2f": lambda metric: (
            f"{z2} - CAST(CAST({z2} AS BIGINT) AS DOUBLE PRECISION)",
            [*z2_params(metric.id), *z2_params(metric.id)],
        ),
    }


def _one_pass(rows: Rows, groups: Sequence[str], sums: Sequence[str]):
    """One pass over the rows on PostgreSQL, exact: the shift and scale of each row come from
    its metric's range (``MIN``/``MAX`` of all the metric's measurements, two lookups in the
    ``(metric, value)`` index) instead of its group's, so the constants are known before the
    rows are read and count, min, max, the caller's sums and the deviation sums are one
    grouped pass. A group keeps this pass's sums when its values lie within ``c ± 2^e``,
    where ``2^e`` is the bound of its own half-range that the two-pass method would scale by
    (``scaling_for``): every deviation then has the same bound, hence the same rounding bounds,
    as with the group's own mid-range; the metric's scale is at most ``2^_SLACK_BITS`` coarser
    (within that, a negligible deviation is still below ``2^-500`` of the group's spread).
    The other groups (a variant far from the metric's centre, a spread far below the metric's
    range) are summed again by the exact second pass of ``_deviation_sums`` with their own
    constants; the answer never depends on which path a group took beyond rounding."""
    metric_ids = [metric.id for metric in rows.metrics]
    several = len(metric_ids) > 1
    if several and "metric_key" not in groups:
        raise ValueError("several metrics need metric_key among the group columns")
    width = len(groups)
    keys_r = ", ".join(f"r.{quoted(name)}" for name in groups)
    # A metric without a measurement yet gets an empty range: any row of it is outside.
    ranges = {metric_id: (0.0, 0.0) for metric_id in metric_ids} | metric_ranges(metric_ids)
    constants = {metric_id: _metricscaling(low, high) for metric_id, (low, high) in ranges.items()}
    inner_sql, inner_params = rows.sql(_deviation_columns(ranges, constants))
    extras = "".join(f", SUM(r.{quoted(name)})" for name in sums)
    sql = (
        f"SELECT {keys_r}, COUNT(*), MIN(r.x), MAX(r.x){extras}, "
        f"SUM(r.q_zi), SUM(r.q_zf), SUM(r.q_z2i), SUM(r.q_z2f) "
        f"FROM ({inner_sql}) r GROUP BY {keys_r}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, inner_params)
        fetched = cursor.fetchall()
    inner_sql, inner_params = rows.sql()
    first, kept, again, used = {}, {}, {}, {}
    for row in fetched:
        key = tuple(row[:width])
        n, low, high = int(row[width]), float(row[width + 1]), float(row[width + 2])
        extras = {
            name: int(value or 0)
            for name, value in zip(sums, row[width + 3 : width + 3 + len(sums)], strict=True)
        }
        zi, zf, z2i, z2f = row[width + 3 + len(sums) :]
        metric_id = key[groups.index("metric_key")] if several else metric_ids[0]
        first[key] = (n, low, high, extras)
        if low == high:
            continue
        scaling, exponent = constants[metric_id]
        metric_low, metric_high = ranges[metric_id]
        if metric_low <= low and high <= metric_high and _within(scaling, exponent, low, high):
            kept[key] = _combine(n, scaling, zi, float(zf), z2i, float(z2f), low, high)
            used[key] = scaling
        else:
            again[key] = used[key] = scaling_for(low, high)
    second = _deviation_sums(inner_sql, inner_params, groups, again) if again else {}
    result = {}
    for key, (n, low, high, extras) in first.items():
        if low == high:
            # Every value equal: the mean is that value and the spread exactly 0.
            moments = Moments(n, low, 0.0, 0.0 if n >= 2 else None, 0.0, low, high, {})
        elif key in kept:
            moments = kept[key]
        else:
            moments = _combine(n, again[key], *second[key], low, high)
        result[key] = replace(moments, sums=extras)
    return _recentred(inner_sql, inner_params, groups, result, used)


def metric_ranges(metric_ids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Each metric's smallest and largest value (of all its measurements), in one statement:
    the first and last entries of the (metric, value) index per metric. Metrics without a
    measurement are absent."""
    measurement = quoted(Measurement._meta.db_table)
    values = ", ".join(["(CAST(%s AS BIGINT))"] * len(metric_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT v.id, (SELECT MIN(m.value) FROM {measurement} m WHERE m.metric_id = v.id), "
            f"(SELECT MAX(m.value) FROM {measurement} m WHERE m.metric_id = v.id) "
            f"FROM (VALUES {values}) v(id)",
            list(metric_ids),
        )
        return {
            int(metric_id): (float(low), float(high))
            for metric_id, low, high in cursor.fetchall()
            if low is not None
        }


def _metricscaling(low: float, high: float) -> tuple[_Scaling, int]:
    """The constants of ``scaling_for`` over a metric's range, with the negligible deviations
    ``_SLACK_BITS`` further down, and the unclamped exponent ``e`` (half-range < 2^e)."""
    scaling = scaling_for(low, high)
    exponent = math.frexp(max(high / 2 - low / 2, math.ulp(0.0)))[1]
    negligible = math.ldexp(
        1.0, max(exponent - _NEGLIGIBLE_BITS - _SLACK_BITS, _MIN_NORMAL_EXPONENT)
    )
    return replace(scaling, negligible=negligible), exponent


def _within(scaling: _Scaling, exponent: int, low: float, high: float) -> bool:
    """Whether a metric's constants keep the bounds of the group's own (``scaling_for``) within
    ``_WIDER_BITS``: the group's values within ``c ± 2^(e_own + _WIDER_BITS)``, and the
    metric's scale unclamped and at most ``_SLACK_BITS`` coarser than the group's."""
    own = math.frexp(max(high / 2 - low / 2, math.ulp(0.0)))[1]  # as in scaling_for
    if max(abs(own), abs(exponent)) > _SCALE_LIMIT or not 0 <= exponent - own <= _SLACK_BITS:
        return False
    bound = Fraction(2) ** (own + _WIDER_BITS)
    shift = Fraction(scaling.shift)
    return Fraction(high) - shift < bound and shift - Fraction(low) < bound


def scaling_for(low: float, high: float, shift: float | None = None) -> _Scaling:
    """The constants about ``shift`` (default: the mid-range) for values in [low, high]."""
    # Halved first, so that ±1.7e308 do not overflow; every |x − c| ≤ 2^e.
    if shift is None:
        shift = low / 2 + high / 2
        e = math.frexp(max(high / 2 - low / 2, math.ulp(0.0)))[1]
    else:
        e = math.frexp(max(high / 2 - shift / 2, shift / 2 - low / 2, math.ulp(0.0)))[1] + 1
    scale_exponent = max(-_SCALE_LIMIT, min(_SCALE_LIMIT, e))
    # |y| ≤ 2^(e − scale_exponent): z and y²·t2 keep at most 2^40 whatever the clamping did.
    excess = max(0, e - scale_exponent)
    negligible_exponent = max(e - _NEGLIGIBLE_BITS, _MIN_NORMAL_EXPONENT)
    return _Scaling(
        shift=shift,
        scale=math.ldexp(1.0, -scale_exponent),
        split=math.ldexp(1.0, _SPLIT_BITS - excess),
        negligible=math.ldexp(1.0, negligible_exponent),
        square_split=math.ldexp(1.0, _SPLIT_BITS - 2 * excess),
    )


def _deviation_sums(
    inner_sql: str, inner_params: tuple, groups: Sequence[str], scalings: dict[tuple, _Scaling]
) -> dict[tuple, tuple]:
    width = len(groups)
    columns = ", ".join(quoted(f"k{i}") for i in range(width))
    one_row = (
        "(" + ", ".join(["CAST(%s AS BIGINT)"] * width + ["CAST(%s AS DOUBLE PRECISION)"] * 5) + ")"
    )
    params: list = []
    for key, scaling in scalings.items():
        params.extend(
            [
                *key,
                scaling.shift,
                scaling.scale,
                scaling.split,
                scaling.negligible,
                scaling.square_split,
            ]
        )
    join = " AND ".join(f"r.{quoted(name)} = g.{quoted(f'k{i}')}" for i, name in enumerate(groups))
    group_columns = ", ".join(f"r.{quoted(name)}" for name in groups)
    keys = ", ".join(f"d.{quoted(name)}" for name in groups)
    # y, z = y·t and z2 = y²·t2 are computed once per row in the inner selects; the outer
    # one splits z and z2 into their integer and fractional parts and sums them.
    sql = (
        f"WITH g({columns}, c, s, t, eps, t2) AS (VALUES {', '.join([one_row] * len(scalings))}) "
        f"SELECT {keys}, SUM(CAST(d.z AS BIGINT)), "
        "SUM(d.z - CAST(CAST(d.z AS BIGINT) AS DOUBLE PRECISION)), SUM(CAST(d.z2 AS BIGINT)), "
        "SUM(d.z2 - CAST(CAST(d.z2 AS BIGINT) AS DOUBLE PRECISION)) "
        f"FROM (SELECT {', '.join(f'e.{quoted(name)}' for name in groups)}, e.y * e.t AS z, "
        "e.y * e.y * e.t2 AS z2 "
        f"FROM (SELECT {group_columns}, g.t, g.t2, "
        "CASE WHEN ABS(r.x - g.c) < g.eps THEN 0.0 ELSE (r.x - g.c) * g.s END AS y "
        f"FROM ({inner_sql}) r JOIN g ON {join}) e) d "
        f"GROUP BY {keys}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        return {tuple(row[:width]): tuple(row[width:]) for row in cursor.fetchall()}


def _combine(
    n: int,
    scaling: _Scaling,
    integer_part,
    fraction_part: float,
    square_integer_part,
    square_fraction_part: float,
    low: float,
    high: float,
) -> Moments:
    # Σz exactly (the integer part may exceed 2^53: kept as an integer), then Σ(x − c) and
    # the mean as rationals, rounded once.
    total_z = Fraction(int(integer_part)) + Fraction(float(fraction_part))
    sum_y = total_z / Fraction(scaling.split)
    exact_mean = Fraction(scaling.shift) + sum_y / n / Fraction(scaling.scale)
    mean = min(max(float(exact_mean), low), high)
    mean_error = float(exact_mean - Fraction(mean))
    # Σy² exactly as well, and Σy² − (Σy)²/n in rationals: no cancellation of digits.
    sum_yy = (
        Fraction(int(square_integer_part or 0)) + Fraction(float(square_fraction_part or 0.0))
    ) / Fraction(scaling.square_split)
    scaled_sum_sq = max(float(sum_yy - sum_y * sum_y / n), 0.0)
    exponent = -math.frexp(scaling.scale)[1] + 1  # scale = 2^-exponent
    std = None
    if n >= 2:
        std = _ldexp(math.sqrt(scaled_sum_sq / (n - 1)), exponent)
        # A spread beyond the largest double (values of ±1.7e308) is not a figure.
        std = std if math.isfinite(std) else None
    return Moments(n, mean, mean_error, std, _ldexp(scaled_sum_sq, 2 * exponent), low, high, {})


def _ldexp(x: float, exponent: int) -> float:
    try:
        return math.ldexp(x, exponent)
    except OverflowError:
        return math.inf
