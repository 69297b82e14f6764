"""Per-group moments aggregated in the database, exact to what doubles allow.

Why this module is long: the exact one-pass sums, their cells and the second pass for
the groups the first cannot keep exact share one set of scaling constants and rounding
bounds, which are checked together and read best in one place.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    # Nested loops of index lookups were the never-analyzed planner's choice: one index
    # lookup per measurement, where a hash join reads the assignments once.
    "enable_nestloop": "off",
    # A grouped aggregate after a sort of 10^6 rows (what the planner picks when it guesses a
    # few thousand rows) is slower than a hash aggregate of the few groups.
    "enable_sort": "off",
    # Compiling the per-row expressions cost more than it saved: they are a few arithmetic
    # operations, cheap to interpret, and the compilation is paid again by every statement.
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
    estimates are guesses and it picks nested loops of index lookups instead, an order of
    magnitude slower (docs/results.md §9; the figures are in load_tests/RESULTS.md, "Results
    report"). The settings make the plan
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
    # With ``cells``: per cell key, its sums about ``shift`` (``Cell``); the group's own sums
    # are the sums of its cells.
    cells: dict[tuple, Cell] | None = None
    shift: float = 0.0


@dataclass(frozen=True)
class Cell:
    """A part of a group (e.g. one lot of a variant): its count, the sums of the deviations
    ``x − shift`` and of their squares (``shift`` the group's; each sum exact but for one
    rounding to a double), and the caller's extra sums."""

    n: int
    deviations: float
    squares: float
    sums: dict[str, int]


# The columns of a cell key and the SQL that reads each from the grouped rows' alias.
CellColumns = Mapping[str, Callable[[str], str]]


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
    cells: CellColumns | None = None,
) -> dict[tuple, Moments]:
    """Moments of column ``x`` of ``rows`` per distinct value of the ``groups`` columns.

    ``rows`` names the (integer) group columns, ``x`` (the value) and the integer columns
    listed in ``sums``. Groups without rows are absent. Given ``Rows`` (``lab.analysis.rows``)
    on PostgreSQL, the one pass of ``_one_pass``: each metric's own range (an index lookup)
    gives the shift and scale; with several metrics, ``metric_key`` (the metric id) must be a
    group column. With ``cells`` (column name → the SQL that reads the column from an alias
    of the grouped rows) each group is also split by those columns in the same statements,
    and its ``Moments.cells`` hold each cell's sums about the group's ``shift``.
    """
    with hash_join_plan():
        return _grouped_moments(rows, groups, sums, dict(cells or {}))


def _keys_sql(alias: str, groups: Sequence[str], cells: CellColumns) -> tuple[str, str]:
    """The select list and the GROUP BY list of the group and cell columns of ``alias``."""
    columns = [f"{alias}.{quoted(name)}" for name in (*groups, *cells)]
    read = [f"{alias}.{quoted(name)}" for name in groups] + [
        reader(f"{alias}.{quoted(name)}") for name, reader in cells.items()
    ]
    return ", ".join(read), ", ".join(columns)


class _Group:
    """A group's count, range and extra sums, gathered over its cells, and per cell its count,
    extra sums and deviation sums [Σz integer part, Σz fraction, Σz² integer part, Σz²
    fraction] (two cell keys that read alike, e.g. lots 42 and "42", are one cell)."""

    def __init__(self, low: float, high: float, sums: Sequence[str]):
        self.n, self.low, self.high = 0, low, high
        self.extras = dict.fromkeys(sums, 0)
        self.cells: dict[tuple, list] = {}

    def add(self, cell: tuple, n: int, low: float, high: float, extras: dict) -> None:
        self.n += n
        self.low, self.high = min(self.low, low), max(self.high, high)
        part = self.cells.setdefault(cell, [0, dict.fromkeys(extras, 0), None])
        part[0] += n
        for name, value in extras.items():
            self.extras[name] += value
            part[1][name] += value


def _gather(fetched, width: int, cells: int, sums: Sequence[str]) -> dict[tuple, _Group]:
    """Per group: its ``_Group`` from rows of group keys, cell keys, COUNT, MIN, MAX and the
    extra sums (further columns are left to the caller)."""
    groups: dict[tuple, _Group] = {}
    at = width + cells
    for row in fetched:
        key = tuple(row[:width])
        low, high = float(row[at + 1]), float(row[at + 2])
        extras = {
            name: int(value or 0)
            for name, value in zip(sums, row[at + 3 : at + 3 + len(sums)], strict=True)
        }
        group = groups.get(key) or groups.setdefault(key, _Group(low, high, sums))
        group.add(tuple(row[width:at]), int(row[at]), low, high, extras)
    return groups


def _add_sums(target: dict[tuple, dict], fetched, width: int, cells: int, at: int) -> None:
    """Adds each row's deviation sums (its four columns from ``at``) to its group's cell."""
    for row in fetched:
        parts = target.setdefault(tuple(row[:width]), {})
        cell = tuple(row[width : width + cells])
        zi, zf, z2i, z2f = row[at : at + 4]
        values = [int(zi or 0), float(zf or 0.0), int(z2i or 0), float(z2f or 0.0)]
        old = parts.get(cell)
        parts[cell] = values if old is None else [a + b for a, b in zip(old, values, strict=True)]


def _finish(group: _Group, scaling: _Scaling | None, parts: dict | None, with_cells: bool):
    """The group's ``Moments`` from its cells' deviation sums about ``scaling`` (None: every
    value equal)."""
    extras = dict(group.extras)
    if scaling is None:
        # Every value equal: the mean is that value and the spread exactly 0.
        low, n = group.low, group.n
        cells = {c: Cell(p[0], 0.0, 0.0, p[1]) for c, p in group.cells.items()}
        return Moments(
            n,
            low,
            0.0,
            0.0 if n >= 2 else None,
            0.0,
            low,
            group.high,
            extras,
            cells if with_cells else None,
            low,
        )
    # The integer parts add exactly; the fractional parts are rounded once.
    values = list(parts.values())
    totals = [
        sum(v[0] for v in values),
        math.fsum(v[1] for v in values),
        sum(v[2] for v in values),
        math.fsum(v[3] for v in values),
    ]
    moments = _combine(group.n, scaling, *totals, group.low, group.high)
    cells = None
    if with_cells:
        # Back from z = (x − c)·s·t and z2 = (x − c)²·s²·t2: powers of two.
        power = -(math.frexp(scaling.split)[1] + math.frexp(scaling.scale)[1] - 2)
        square_power = -(math.frexp(scaling.square_split)[1] + 2 * math.frexp(scaling.scale)[1] - 3)
        zero = [0, 0.0, 0, 0.0]
        cells = {}
        for cell, (n, cell_extras, _) in group.cells.items():
            zi, zf, z2i, z2f = parts.get(cell, zero)
            cells[cell] = Cell(
                n,
                _ldexp(math.fsum((zi, zf)), power),
                _ldexp(math.fsum((z2i, z2f)), square_power),
                cell_extras,
            )
    return replace(moments, sums=extras, cells=cells, shift=scaling.shift)


def _grouped_moments(
    rows: RowsLike, groups: Sequence[str], sums: Sequence[str], cells: CellColumns
) -> dict:
    if connection.vendor == "postgresql" and isinstance(rows, Rows) and rows.metrics:
        return _one_pass(rows, groups, sums, cells)
    inner_sql, inner_params = rows_sql(rows)
    select, group_by = _keys_sql("r", groups, cells)
    extra = "".join(f", SUM(r.{quoted(name)})" for name in sums)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {select}, COUNT(*), MIN(r.x), MAX(r.x){extra} "
            f"FROM ({inner_sql}) r GROUP BY {group_by}",
            inner_params,
        )
        first = _gather(cursor.fetchall(), len(groups), len(cells), sums)
    scalings = {
        key: scaling_for(group.low, group.high)
        for key, group in first.items()
        if group.low != group.high
    }
    second = _deviation_sums(inner_sql, inner_params, groups, scalings, cells) if scalings else {}
    result = {
        key: _finish(group, scalings.get(key), second.get(key, {}), bool(cells))
        for key, group in first.items()
    }
    return _recentred(inner_sql, inner_params, groups, result, scalings, first, cells)


def _recentred(
    inner_sql: str,
    inner_params: tuple,
    groups: Sequence[str],
    result: dict[tuple, Moments],
    scalings: dict[tuple, _Scaling],
    gathered: dict[tuple, _Group],
    cells: CellColumns,
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
    sums = _deviation_sums(inner_sql, inner_params, groups, again, cells)
    for key, scaling in again.items():
        result[key] = _finish(gathered[key], scaling, sums.get(key, {}), bool(cells))
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
    metric's constants (literals PostgreSQL folds into the scan): y = (x − c)·s as ``q_y``,
    and the splits ``q_t`` and ``q_t2`` of z = y·t and y²·t2 (``_deviation_sums``). y is one
    column, read by every sum: written out in each summed expression, PostgreSQL evaluated it
    once per occurrence. A value outside its metric's range (measured after the range was
    read) is left out of the sums: its group's MIN or MAX shows it, and the group is summed
    again by the second pass."""
    double = "CAST(%s AS DOUBLE PRECISION)"
    y = (
        f"(CASE WHEN m.value < {double} OR m.value > {double} THEN 0.0 "
        f"WHEN ABS(m.value - {double}) < {double} THEN 0.0 "
        f"ELSE (m.value - {double}) * {double} END)"
    )

    def y_params(metric_id: int) -> list:
        low, high = ranges[metric_id]
        scaling = constants[metric_id][0]
        return [low, high, scaling.shift, scaling.negligible, scaling.shift, scaling.scale]

    return {
        "q_y": lambda metric: (y, y_params(metric.id)),
        "q_t": lambda metric: (double, [constants[metric.id][0].split]),
        "q_t2": lambda metric: (double, [constants[metric.id][0].square_split]),
    }


def _split_sums(alias: str, y: str, t: str, t2: str) -> str:
    """The four exact sums of z = y·t and z2 = y²·t2: of each, the integer part (a 64-bit
    integer) and the fractional part."""
    z, z2 = f"({alias}.{y} * {alias}.{t})", f"({alias}.{y} * {alias}.{y} * {alias}.{t2})"
    return (
        f"SUM(CAST({z} AS BIGINT)), SUM({z} - CAST(CAST({z} AS BIGINT) AS DOUBLE PRECISION)), "
        f"SUM(CAST({z2} AS BIGINT)), "
        f"SUM({z2} - CAST(CAST({z2} AS BIGINT) AS DOUBLE PRECISION))"
    )


def _one_pass(rows: Rows, groups: Sequence[str], sums: Sequence[str], cells: CellColumns):
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
    select, group_by = _keys_sql("r", groups, cells)
    # A metric without a measurement yet gets an empty range: any row of it is outside.
    ranges = {metric_id: (0.0, 0.0) for metric_id in metric_ids} | metric_ranges(metric_ids)
    constants = {metric_id: _metric_scaling(low, high) for metric_id, (low, high) in ranges.items()}
    inner_sql, inner_params = rows.sql(_deviation_columns(ranges, constants))
    extras = "".join(f", SUM(r.{quoted(name)})" for name in sums)
    sql = (
        f"SELECT {select}, COUNT(*), MIN(r.x), MAX(r.x){extras}, "
        f"{_split_sums('r', 'q_y', 'q_t', 'q_t2')} "
        f"FROM ({inner_sql}) r GROUP BY {group_by}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, inner_params)
        fetched = cursor.fetchall()
    first = _gather(fetched, width, len(cells), sums)
    one_pass: dict[tuple, dict] = {}
    _add_sums(one_pass, fetched, width, len(cells), width + len(cells) + 3 + len(sums))
    inner_sql, inner_params = rows.sql()
    kept, again, used = {}, {}, {}
    for key, group in first.items():
        if group.low == group.high:
            continue
        low, high = group.low, group.high
        metric_id = key[groups.index("metric_key")] if several else metric_ids[0]
        scaling, exponent = constants[metric_id]
        metric_low, metric_high = ranges[metric_id]
        if metric_low <= low and high <= metric_high and _within(scaling, exponent, low, high):
            kept[key] = used[key] = scaling
        else:
            again[key] = used[key] = scaling_for(low, high)
    second = _deviation_sums(inner_sql, inner_params, groups, again, cells) if again else {}
    result = {}
    for key, group in first.items():
        parts = one_pass.get(key, {}) if key in kept else second.get(key, {})
        result[key] = _finish(group, used.get(key), parts, bool(cells))
    return _recentred(inner_sql, inner_params, groups, result, used, first, cells)


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


def _metric_scaling(low: float, high: float) -> tuple[_Scaling, int]:
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
    inner_sql: str,
    inner_params: tuple,
    groups: Sequence[str],
    scalings: dict[tuple, _Scaling],
    cells: CellColumns | None = None,
) -> dict[tuple, dict[tuple, list]]:
    """Per group and cell: [Σz integer part, Σz fraction, Σz² integer part, Σz² fraction]
    about the group's constants."""
    cells = cells or {}
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
    carried = ", ".join(f"r.{quoted(name)}" for name in (*groups, *cells))
    select, group_by = _keys_sql("e", groups, cells)
    # y is computed once per row in the inner select; the outer one splits z = y·t and
    # z2 = y²·t2 into their integer and fractional parts and sums them.
    sql = (
        f"WITH g({columns}, c, s, t, eps, t2) AS (VALUES {', '.join([one_row] * len(scalings))}) "
        f"SELECT {select}, {_split_sums('e', 'y', 't', 't2')} "
        f"FROM (SELECT {carried}, g.t, g.t2, "
        "CASE WHEN ABS(r.x - g.c) < g.eps THEN 0.0 ELSE (r.x - g.c) * g.s END AS y "
        f"FROM ({inner_sql}) r JOIN g ON {join}) e "
        f"GROUP BY {group_by}"
    )
    result: dict[tuple, dict] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        _add_sums(result, cursor.fetchall(), width, len(cells), width + len(cells))
    return result


def _combine(
    n: int,
    scaling: _Scaling,
    integer_part,
    fraction_part,
    square_integer_part,
    square_fraction_part,
    low: float,
    high: float,
) -> Moments:
    # Σz exactly (the integer part may exceed 2^53: kept as an integer), then Σ(x − c) and
    # the mean as rationals, rounded once.
    total_z = Fraction(int(integer_part)) + Fraction(fraction_part)
    sum_y = total_z / Fraction(scaling.split)
    exact_mean = Fraction(scaling.shift) + sum_y / n / Fraction(scaling.scale)
    mean = min(max(float(exact_mean), low), high)
    mean_error = float(exact_mean - Fraction(mean))
    # Σy² exactly as well, and Σy² − (Σy)²/n in rationals: no cancellation of digits.
    sum_yy = (
        Fraction(int(square_integer_part or 0)) + Fraction(square_fraction_part or 0.0)
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
