"""Cluster inference for experiments randomized by lot (docs/results.md, "Lots").

When an experiment hashes a unit attribute (``randomize_by``, e.g. ``lot``) rather than the
unit, the lots are the independent draws: units of one lot share their furnace run, material
and operator. The comparison of a treatment with the control is then the OLS ``y ~ 1 + T``
over the two arms' units with the CR1 cluster-robust variance (Stata's ``vce(cluster)``,
statsmodels' ``cov_type="cluster"``) and ``df`` = G − 1.

For this model everything follows from per (lot, arm) aggregates: the coefficient of ``T`` is
the difference of the arm means, and its influence on unit i is ``e_i/N_1`` (treated) or
``−e_i/N_0`` (control), ``e_i`` its residual (the value minus its arm's mean). The CR1
variance is ``G/(G−1)·(N−1)/(N−2)·Σ_g (S_g1/N_1 − S_g0/N_0)²`` where ``S_ga`` is the sum of
the residuals of lot g's units in arm a (a lot split across arms by forcing has both). The
database returns, per (metric, variant, lot), the count, the sum and the sum of squares of
``x − c`` (``c`` the variant's mean: deviations, not raw values, so nothing cancels) and the
in-spec count: one grouped statement, no unit reaches Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from django.db import connection
from scipy import stats as _scipy

from lab.analysis.common import finite
from lab.analysis.moments import hash_join_plan
from lab.analysis.rows import Rows
from lab.models import Assignment, Metric, Unit


@dataclass(frozen=True)
class LotCell:
    """One lot's units of one arm: ``n``, Σ(x − c), Σ(x − c)², in-spec count (c: the arm's
    mean used as the shift)."""

    n: int
    sum: float
    squares: float
    in_spec: int


def lot_label_sql(attribute_param: str = "%s") -> str:
    """SQL of a unit's lot (``u.attributes[name]``) as conditions read it: a string as is, a
    boolean ``true``/``false``, a number its text (``42`` and ``42.0`` alike); NULL when the unit
    has no such attribute, or a list."""
    if connection.vendor == "postgresql":
        value = f"(u.attributes -> CAST({attribute_param} AS TEXT))"
        return (
            f"CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}' "
            f"WHEN 'boolean' THEN {value} #>> '{{}}' "
            f"WHEN 'number' THEN CAST(trim_scale(CAST({value} #>> '{{}}' AS NUMERIC)) AS TEXT) "
            "END"
        )
    path = f"('$.\"' || {attribute_param} || '\"')"
    kind = f"json_type(u.attributes, {path})"
    raw = f"json_extract(u.attributes, {path})"
    return (
        f"CASE {kind} WHEN 'text' THEN {raw} "
        f"WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"WHEN 'integer' THEN CAST({raw} AS TEXT) "
        f"WHEN 'real' THEN CASE WHEN {raw} = CAST(CAST({raw} AS INTEGER) AS REAL) "
        f"AND ABS({raw}) < 1e15 THEN CAST(CAST({raw} AS INTEGER) AS TEXT) "
        f"ELSE CAST({raw} AS TEXT) END END"
    )


def _lot_params(attribute: str) -> list:
    # One parameter per mention of the attribute in the expression.
    return [attribute] * lot_label_sql().count("%s")


def lot_cells(
    experiment_id: int,
    metrics: Sequence[Metric],
    attribute: str,
    shifts: dict[tuple[int, int], float],
) -> dict[tuple[int, int], list[tuple[tuple, LotCell]]]:
    """Per (metric id, variant id): the lots of its measured units, as ``(lot key, cell)``.
    A lot key is ``(label, None)``, or ``(None, unit id)`` for a unit without the attribute
    (a lot of its own). ``shifts`` gives each (metric, variant)'s mean."""
    if not shifts:
        return {}
    quote = connection.ops.quote_name
    # Each unit's lot is read once (a materialized table of the experiment's units), not once
    # per measurement: the JSON of 10^6 rows cost seconds.
    label = lot_label_sql()
    lots_sql = (
        f"SELECT a.unit_id, a.variant_id, {label} AS lot "
        f"FROM {quote(Assignment._meta.db_table)} a "
        f"JOIN {quote(Unit._meta.db_table)} u ON u.id = a.unit_id WHERE a.experiment_id = %s"
    )
    lots_params = [*_lot_params(attribute), experiment_id]
    rows = Rows(
        columns="m.metric_id AS metric_key, l.variant_id AS variant_key, m.value AS x, "
        "m.in_spec AS in_spec, l.lot AS lot, m.unit_id AS unit_key",
        joins="JOIN lots l ON l.unit_id = m.unit_id",
        params=(),
        metrics=tuple(metrics),
    )
    inner_sql, inner_params = rows.sql()
    one = "(CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS DOUBLE PRECISION))"
    values = ", ".join([one] * len(shifts))
    params = [item for (metric, variant), c in shifts.items() for item in (metric, variant, c)]
    sql = (
        f"WITH g(metric_key, variant_key, c) AS (VALUES {values}), "
        f"lots AS MATERIALIZED ({lots_sql}) "
        "SELECT r.metric_key, r.variant_key, r.lot, "
        "CASE WHEN r.lot IS NULL THEN r.unit_key END AS solo, COUNT(*), "
        "SUM(r.x - g.c), SUM((r.x - g.c) * (r.x - g.c)), SUM(r.in_spec) "
        f"FROM ({inner_sql}) r JOIN g ON g.metric_key = r.metric_key "
        "AND g.variant_key = r.variant_key "
        "GROUP BY r.metric_key, r.variant_key, r.lot, CASE WHEN r.lot IS NULL THEN r.unit_key END"
    )
    inner_params = (*lots_params, *inner_params)
    result: dict[tuple[int, int], list] = {}
    with hash_join_plan(), connection.cursor() as cursor:
        cursor.execute(sql, [*params, *inner_params])
        for metric_id, variant_id, lot, solo, n, total, squares, in_spec in cursor.fetchall():
            cell = LotCell(int(n), float(total), float(squares), int(in_spec or 0))
            result.setdefault((metric_id, variant_id), []).append(((lot, solo), cell))
    return result


def lot_counts(experiment_id: int, attribute: str, sources: Sequence[str]) -> dict[int, int]:
    """Per variant id: the distinct lots among its units assigned by one of ``sources`` (what
    the sample-ratio check counts when a lot is one draw)."""
    quote = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(sources))
    sql = (
        f"SELECT a.variant_id, COUNT(DISTINCT {lot_label_sql()}) "
        f"FROM {quote(Assignment._meta.db_table)} a "
        f"JOIN {quote(Unit._meta.db_table)} u ON u.id = a.unit_id "
        f"WHERE a.experiment_id = %s AND a.source IN ({placeholders}) GROUP BY a.variant_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_lot_params(attribute), experiment_id, *sources])
        return {variant_id: int(count) for variant_id, count in cursor.fetchall()}


_CLUSTER_KEYS = ("t", "df", "p_value", "ci_low", "ci_high")
_YIELD_KEYS = ("yield_ci_low", "yield_ci_high", "yield_p_value")


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: its units' count, exact mean (``mean + mean_error``), the
    shift its lot cells were summed about, and the cells by lot key."""

    n: int
    mean: float
    mean_error: float
    shift: float
    cells: dict[tuple, LotCell]
    in_spec: int | None


def _residual_sums(arm: Arm) -> dict[tuple, float]:
    # Σ(x − ȳ) over a cell = Σ(x − c) − n·(ȳ − c); ȳ − c is tiny (c is ȳ rounded).
    offset = float(Fraction(arm.mean) + Fraction(arm.mean_error) - Fraction(arm.shift))
    return {key: cell.sum - cell.n * offset for key, cell in arm.cells.items()}


def cr1_test(
    diff: float,
    control_scores: dict[tuple, float],
    treatment_scores: dict[tuple, float],
    n_control: int,
    n_treatment: int,
    confidence: float = 0.95,
) -> tuple[dict, int]:
    """t, df = G − 1, p-value and interval of ``diff`` with the CR1 variance, from each arm's
    per-lot sums of residuals. Returns the block and G."""
    lots = set(control_scores) | set(treatment_scores)
    g = len(lots)
    n = n_control + n_treatment
    block = dict.fromkeys(_CLUSTER_KEYS)
    if g < 2 or n < 3 or n_control == 0 or n_treatment == 0 or diff is None:
        return block, g
    meat = sum(
        (treatment_scores.get(lot, 0) / n_treatment - control_scores.get(lot, 0) / n_control) ** 2
        for lot in lots
    )
    variance = Fraction(g, g - 1) * Fraction(n - 1, n - 2) * meat
    se = math.sqrt(float(variance)) if variance > 0 else 0.0
    if not se > 0.0 or not math.isfinite(se):
        return block, g
    df = g - 1
    t = diff / se
    margin = float(_scipy.t.ppf(0.5 + confidence / 2.0, df)) * se
    block.update(
        t=finite(t),
        df=float(df),
        p_value=finite(2.0 * float(_scipy.t.sf(abs(t), df))),
        ci_low=finite(diff - margin),
        ci_high=finite(diff + margin),
    )
    return block, g


def cluster_vs_control(control: Arm, treatment: Arm, diff: float | None, has_limits: bool) -> dict:
    """The cluster-robust parts of ``vs_control``: ``t``, ``df``, ``p_value``, ``ci_*`` (CR1,
    t(G − 1)), the yield comparison by the same OLS on the in-spec indicator, ``clusters``
    (G), ``icc`` and ``design_effect``."""
    block, _ = cr1_test(
        diff, _residual_sums(control), _residual_sums(treatment), control.n, treatment.n
    )
    block.update(_icc(control, treatment))
    if has_limits and control.in_spec is not None and treatment.in_spec is not None:
        block.update(_yield(control, treatment))
    return block


def _yield(control: Arm, treatment: Arm) -> dict:
    """The CR1 OLS on the in-spec indicator: the residual sum of a cell is k − n·p (exact)."""
    result = {}
    if control.n == 0 or treatment.n == 0:
        return dict.fromkeys(_YIELD_KEYS)
    p_c = Fraction(control.in_spec, control.n)
    p_t = Fraction(treatment.in_spec, treatment.n)
    scores = [
        {key: float(cell.in_spec - cell.n * p) for key, cell in arm.cells.items()}
        for arm, p in ((control, p_c), (treatment, p_t))
    ]
    diff = float(p_t - p_c)
    test, _ = cr1_test(diff, scores[0], scores[1], control.n, treatment.n)
    result["yield_p_value"] = test["p_value"]
    result["yield_ci_low"] = test["ci_low"]
    result["yield_ci_high"] = test["ci_high"]
    return result


def _icc(control: Arm, treatment: Arm) -> dict:
    """The ANOVA estimator of the intraclass correlation for lots nested in the two arms
    (Donner & Klar), over the (lot, arm) cells, and the design effect 1 + (m0 − 1)·icc."""
    none = {"icc": None, "design_effect": None}
    arms = [arm for arm in (control, treatment) if arm.n > 0]
    cells = [(arm, key, cell) for arm in arms for key, cell in arm.cells.items()]
    g = len(cells)
    n = sum(arm.n for arm in arms)
    if len(arms) < 2 or g <= 2 or n - g <= 0:
        return none
    between, within, sizes = [], [], Fraction(0)
    for arm in arms:
        residual = _residual_sums(arm)
        for key, cell in arm.cells.items():
            between.append(residual[key] ** 2 / cell.n)
            within.append(cell.squares - cell.sum**2 / cell.n)
        sizes += Fraction(sum(cell.n**2 for cell in arm.cells.values()), arm.n)
    msb = math.fsum(between) / (g - 2)
    msw = max(math.fsum(within), 0.0) / (n - g)
    m0 = float((n - sizes) / (g - 2))
    denominator = msb + (m0 - 1) * msw
    if not denominator > 0:
        return none
    icc = max((msb - msw) / denominator, 0.0)
    return {"icc": finite(icc), "design_effect": finite(1 + (m0 - 1) * icc)}
