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
report's one grouped pass over the measurements (``lab.analysis.moments`` with cells) groups
by (metric, variant, lot): per cell the count, the exact sums of the deviations ``x − c`` and
of their squares (``c`` the variant's shift: deviations, not raw values, so nothing cancels)
and the in-spec count; the variant's moments are the sums of its cells. No unit reaches
Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from django.db import connection
from scipy import stats as _scipy

from lab.analysis.common import finite
from lab.analysis.moments import Cell, CellColumns, hash_join_plan
from lab.analysis.rows import Rows
from lab.models import Assignment, Metric, Unit

_SCALARS = "('string', 'number', 'boolean')"


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def lot_value_sql(attribute_param: str = "%s") -> str:
    """SQL of a unit's lot attribute as stored: on PostgreSQL its JSON value (grouped as is,
    cheap per row; ``lot_label_sql`` reads a group's label once); elsewhere its label."""
    if connection.vendor == "postgresql":
        return f"(u.attributes -> CAST({attribute_param} AS TEXT))"
    return lot_label_sql(attribute_param)


def label_of_value(value: str) -> str:
    """SQL of the label of a lot value of ``lot_value_sql`` (on PostgreSQL a JSON value): a
    string as is, a boolean ``true``/``false``, a number its text (``42`` and ``42.0``
    alike); NULL for no value, a list or an object."""
    if connection.vendor != "postgresql":
        return value
    return (
        f"CASE jsonb_typeof({value}) WHEN 'string' THEN {value} #>> '{{}}' "
        f"WHEN 'boolean' THEN {value} #>> '{{}}' "
        f"WHEN 'number' THEN CAST(trim_scale(CAST({value} #>> '{{}}' AS NUMERIC)) AS TEXT) "
        "END"
    )


def lot_label_sql(attribute_param: str = "%s") -> str:
    """SQL of a unit's lot (``u.attributes[name]``) as conditions read it: a string as is, a
    boolean ``true``/``false``, a number its text (``42`` and ``42.0`` alike); NULL when the unit
    has no such attribute, or a list."""
    if connection.vendor == "postgresql":
        return label_of_value(f"(u.attributes -> CAST({attribute_param} AS TEXT))")
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


def _params(sql_of, attribute: str) -> list:
    # One parameter per mention of the attribute in the expression.
    return [attribute] * sql_of().count("%s")


def _has_lot_sql() -> str:
    """SQL that is true when the unit's attribute gives it a lot (else it is a lot of its
    own)."""
    if connection.vendor == "postgresql":
        return f"jsonb_typeof({lot_value_sql()}) IN {_SCALARS}"
    return f"{lot_label_sql()} IS NOT NULL"


# A lot key is (label, None), or (None, unit id) for a unit without a lot.
LOT_CELLS: CellColumns = {"lot": label_of_value, "solo": lambda column: column}


def lot_columns_sql(attribute: str, unit_id: str = "m.unit_id") -> tuple[str, list]:
    """The select list of a row's lot (the units joined as ``u``): ``lot``
    (``lot_value_sql``) and ``solo`` (``unit_id`` when the unit has no lot), and their
    parameters."""
    sql = (
        f"{lot_value_sql()} AS lot, CASE WHEN {_has_lot_sql()} THEN NULL ELSE {unit_id} END AS solo"
    )
    return sql, [*_params(lot_value_sql, attribute), *_params(_has_lot_sql, attribute)]


def lot_rows(experiment_id: int, metrics: Sequence[Metric], attribute: str) -> Rows:
    """``experiment_rows`` with each unit's lot: ``lot`` (``lot_value_sql``) and ``solo``
    (the unit id when it has no lot). The experiment's units, with their variant and lot, are
    a subquery PostgreSQL merges into the join: the whole join and a partial aggregate then run
    in the parallel workers (a subquery kept apart ends in a gather of its own, and everything
    above it runs in one process: load_tests/RESULTS.md, "Lots on a quiet machine")."""
    lot_columns, lot_params = lot_columns_sql(attribute, unit_id="a.unit_id")
    return Rows(
        columns="m.metric_id AS metric_key, l.variant_id AS variant_key, m.value AS x, "
        "m.in_spec AS in_spec, l.lot AS lot, l.solo AS solo",
        joins=f"JOIN (SELECT a.unit_id, a.variant_id, {lot_columns} "
        f"FROM {_table(Assignment)} a JOIN {_table(Unit)} u ON u.id = a.unit_id "
        f"WHERE a.experiment_id = %s) l ON l.unit_id = m.unit_id",
        params=(*lot_params, experiment_id),
        metrics=tuple(metrics),
    )


def lot_counts(experiment_id: int, attribute: str, sources: Sequence[str]) -> dict[int, int]:
    """Per variant id: the distinct lots among its units assigned by one of ``sources`` (what
    the sample-ratio check counts when a lot is one draw). Grouped by the stored value, each
    group's label read once."""
    placeholders = ", ".join(["%s"] * len(sources))
    sql = (
        f"SELECT r.variant_id, {label_of_value('r.lot')} FROM "
        f"(SELECT a.variant_id, {lot_value_sql()} AS lot FROM {_table(Assignment)} a "
        f"JOIN {_table(Unit)} u ON u.id = a.unit_id "
        f"WHERE a.experiment_id = %s AND a.source IN ({placeholders})) r "
        "GROUP BY r.variant_id, r.lot"
    )
    labels: dict[int, set] = {}
    with hash_join_plan(), connection.cursor() as cursor:
        cursor.execute(sql, [*_params(lot_value_sql, attribute), experiment_id, *sources])
        for variant_id, label in cursor.fetchall():
            if label is not None:
                labels.setdefault(variant_id, set()).add(label)
    return {variant_id: len(found) for variant_id, found in labels.items()}


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
    cells: dict[tuple, Cell]
    in_spec: int | None


def _residual_sums(arm: Arm) -> dict[tuple, float]:
    # Σ(x − ȳ) over a cell = Σ(x − c) − n·(ȳ − c); ȳ − c is small next to the spread (a
    # group far from its shift is summed again about its mean).
    offset = float(Fraction(arm.mean) + Fraction(arm.mean_error) - Fraction(arm.shift))
    return {key: cell.deviations - cell.n * offset for key, cell in arm.cells.items()}


def cr1_variance(
    control: dict[tuple, float], treatment: dict[tuple, float], n: int, parameters: int
) -> tuple[float | None, int]:
    """The CR1 sandwich of a difference between two arms: ``control`` and ``treatment`` map
    each lot to the sum of its units' influence on that arm's estimate (a lot split across
    arms by forcing has both), so a lot's score is their difference; the variance is
    ``G/(G−1)·(N−1)/(N−K)·Σ_g score_g²`` (K = ``parameters`` of the OLS over the N units).
    Returns it (None below two lots or N ≤ K) and G; its t has G − 1 degrees of freedom."""
    lots = set(control) | set(treatment)
    g = len(lots)
    if g < 2 or n <= parameters:
        return None, g
    meat = math.fsum((treatment.get(lot, 0.0) - control.get(lot, 0.0)) ** 2 for lot in lots)
    return float(Fraction(g, g - 1) * Fraction(n - 1, n - parameters)) * meat, g


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
    block = dict.fromkeys(_CLUSTER_KEYS)
    if n_control == 0 or n_treatment == 0 or diff is None:
        return block, len(set(control_scores) | set(treatment_scores))
    # A unit's influence on its arm's mean is its residual over the arm's count.
    variance, g = cr1_variance(
        {lot: s / n_control for lot, s in control_scores.items()},
        {lot: s / n_treatment for lot, s in treatment_scores.items()},
        n_control + n_treatment,
        2,
    )
    if variance is None:
        return block, g
    se = math.sqrt(variance) if variance > 0 else 0.0
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
    # k − n·K/N as (k·N − n·K)/N: integers, one correctly rounded division.
    scores = [
        {
            key: (cell.sums["in_spec"] * arm.n - cell.n * arm.in_spec) / arm.n
            for key, cell in arm.cells.items()
        }
        for arm in (control, treatment)
    ]
    diff = float(Fraction(treatment.in_spec, treatment.n) - Fraction(control.in_spec, control.n))
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
            within.append(cell.squares - cell.deviations**2 / cell.n)
        sizes += Fraction(sum(cell.n**2 for cell in arm.cells.values()), arm.n)
    msb = math.fsum(between) / (g - 2)
    msw = max(math.fsum(within), 0.0) / (n - g)
    m0 = float((n - sizes) / (g - 2))
    denominator = msb + (m0 - 1) * msw
    if not denominator > 0:
        return none
    icc = max((msb - msw) / denominator, 0.0)
    return {"icc": finite(icc), "design_effect": finite(1 + (m0 - 1) * icc)}
