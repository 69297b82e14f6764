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
   deviations are small, so nothing overflows, underflows or cancels. ``Σy`` is summed exactly:
   ``y·2^40`` is split into an integer part (summed as a 64-bit integer — exact) and a
   fractional part (whose rounding is ~2^-40 of the spread).

Then ``mean = c + Σy/(n·s)`` (correctly rounded, with the rounding error kept as
``mean_error`` so that differences of means keep their digits) and the sum of squared
deviations ``Σy² − (Σy)²/n`` (the corrected two-pass formula), scaled back by ``1/s²``.
A group whose values are all equal has ``std`` exactly 0: ``MIN = MAX`` says so.

The statements use only ``COUNT``/``MIN``/``MAX``/``SUM`` and ``CAST`` (portable between
SQLite and PostgreSQL), two per call whatever the number of rows or groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from django.db import connection
from django.db.models import QuerySet

# y·2^40 has an integer part below 2^41 in magnitude: a 64-bit integer sum of 2^22 of them
# cannot overflow on SQLite (PostgreSQL sums bigints as numeric, which never overflows).
_SPLIT_BITS = 40
# The scale exponent is kept within the normal doubles, so that s, s² and 1/s are exact.
_MAX_SCALE_EXPONENT = 1000


@dataclass(frozen=True)
class Moments:
    """One group's aggregates. ``mean + mean_error`` is the exact mean to about twice the
    precision of a double; ``sum_sq`` is Σ(x − mean)² (``inf`` when it does not fit a
    double although ``std`` does); ``std`` is the sample standard deviation (n − 1), ``None``
    below two values; ``sums`` holds the caller's extra sums by name."""

    n: int
    mean: float
    mean_error: float
    std: float | None
    sum_sq: float
    min: float
    max: float
    sums: dict[str, int]


def grouped_moments(
    rows: QuerySet, *, groups: Sequence[str], sums: Sequence[str] = ()
) -> dict[tuple, Moments]:
    """Moments of column ``x`` of ``rows`` per distinct value of the ``groups`` columns.

    ``rows`` is a ``values()`` queryset naming the group columns, ``x`` (the value) and the
    integer columns listed in ``sums``. Groups without rows are absent from the answer.
    """
    inner_sql, inner_params = rows.query.get_compiler(using=rows.db).as_sql()
    keys = ", ".join(f"r.{_quoted(name)}" for name in groups)
    extra = "".join(f", SUM(r.{_quoted(name)})" for name in sums)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {keys}, COUNT(*), MIN(r.x), MAX(r.x){extra} "
            f"FROM ({inner_sql}) r GROUP BY {keys}",
            inner_params,
        )
        first = cursor.fetchall()
    width = len(groups)
    shifts: dict[tuple, tuple[float, int]] = {}
    for row in first:
        key, low, high = tuple(row[:width]), row[width + 1], row[width + 2]
        if low != high:
            shifts[key] = _shift_and_scale(low, high)

    second: dict[tuple, tuple] = {}
    if shifts:
        second = _deviation_sums(inner_sql, inner_params, groups, shifts)

    result = {}
    for row in first:
        key = tuple(row[:width])
        n, low, high = int(row[width]), float(row[width + 1]), float(row[width + 2])
        extras = {name: int(value or 0) for name, value in zip(sums, row[width + 3 :], strict=True)}
        if key not in shifts:
            result[key] = Moments(n, low, 0.0, 0.0 if n >= 2 else None, 0.0, low, high, extras)
            continue
        shift, exponent = shifts[key]
        integer_part, fraction_part, squares = second[key]
        result[key] = _combine(n, shift, exponent, integer_part, fraction_part, squares, low, high)
        result[key] = Moments(**{**result[key].__dict__, "sums": extras})
    return result


def _quoted(name: str) -> str:
    return connection.ops.quote_name(name)


def _shift_and_scale(low: float, high: float) -> tuple[float, int]:
    """The mid-range (halved first, so ±1.7e308 do not overflow) and the exponent e with
    half the range ≤ 2^e, kept within the normal doubles."""
    shift = low / 2 + high / 2
    half_range = max(high / 2 - low / 2, math.ulp(0.0))
    exponent = math.frexp(half_range)[1]
    return shift, max(-_MAX_SCALE_EXPONENT, min(_MAX_SCALE_EXPONENT, exponent))


def _deviation_sums(
    inner_sql: str, inner_params: tuple, groups: Sequence[str], shifts: dict[tuple, tuple]
) -> dict[tuple, tuple]:
    width = len(groups)
    columns = ", ".join(_quoted(f"k{i}") for i in range(width))
    one_row = (
        "("
        + ", ".join(["CAST(%s AS BIGINT)"] * width)
        + ", CAST(%s AS DOUBLE PRECISION), CAST(%s AS DOUBLE PRECISION))"
    )
    params: list = []
    for key, (shift, exponent) in shifts.items():
        params.extend([*key, shift, math.ldexp(1.0, -exponent)])
    join = " AND ".join(
        f"r.{_quoted(name)} = g.{_quoted(f'k{i}')}" for i, name in enumerate(groups)
    )
    keys = ", ".join(f"d.{_quoted(name)}" for name in groups)
    # y and z = y·2^40 are computed once per row in the inner select; the outer one splits z
    # into its integer and fractional parts and sums them.
    z = f"(r.x - g.c) * g.s * CAST({2**_SPLIT_BITS} AS DOUBLE PRECISION)"
    group_columns = ", ".join(f"r.{_quoted(name)}" for name in groups)
    sql = (
        f"WITH g({columns}, c, s) AS (VALUES {', '.join([one_row] * len(shifts))}) "
        f"SELECT {keys}, SUM(CAST(d.z AS BIGINT)), "
        "SUM(d.z - CAST(CAST(d.z AS BIGINT) AS DOUBLE PRECISION)), SUM(d.y * d.y) "
        f"FROM (SELECT {group_columns}, (r.x - g.c) * g.s AS y, {z} AS z "
        f"FROM ({inner_sql}) r JOIN g ON {join}) d "
        f"GROUP BY {keys}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        return {tuple(row[:width]): tuple(row[width:]) for row in cursor.fetchall()}


def _combine(
    n: int,
    shift: float,
    exponent: int,
    integer_part,
    fraction_part: float,
    squares: float,
    low: float,
    high: float,
) -> Moments:
    # Σy·2^40 exactly (the integer part may exceed 2^53: kept as an integer), then the mean
    # as a rational, rounded once.
    total = Fraction(int(integer_part)) + Fraction(float(fraction_part))
    offset = total / (2**_SPLIT_BITS * n) * Fraction(2) ** exponent
    exact_mean = Fraction(shift) + offset
    mean = float(exact_mean)
    # Means strictly inside [min, max]; rounding can only touch the last bit.
    mean = min(max(mean, low), high)
    mean_error = float(exact_mean - Fraction(mean))
    sum_y = float(total / 2**_SPLIT_BITS)
    scaled_sum_sq = max(float(squares) - sum_y * sum_y / n, 0.0)
    std = None
    if n >= 2:
        std = math.ldexp(math.sqrt(scaled_sum_sq / (n - 1)), exponent)
    try:
        sum_sq = math.ldexp(scaled_sum_sq, 2 * exponent)
    except OverflowError:
        sum_sq = math.inf
    return Moments(n, mean, mean_error, std, sum_sq, low, high, {})
