"""Covariate adjustment of the results (CUPED / ANCOVA with an upstream measurement,
docs/results.md §18).

For each metric and treatment, over the two arms' units measured on both the metric (y) and
the covariate (x): Lin's (2013) interacted regression ``y = a + b·T + c·(x − x̄) +
d·T·(x − x̄)``, x̄ the mean of x over those units. The model is one straight line per arm, so
``b = (ȳ_1 − β_1(x̄_1 − x̄)) − (ȳ_0 − β_0(x̄_0 − x̄))`` with ``β_a = Sxy_a/Sxx_a``, and ``b``
is ``Σ w_i y_i`` with ``w_i = ±(1/n_a − k_a (x_i − x̄_a))``, ``k_a = (x̄_a − x̄)/Sxx_a``. Its
HC2 variance ``Σ w_i² e_i²/(1 − h_i)`` (``h_i = 1/n_a + (x_i − x̄_a)²/Sxx_a``, the leverage)
and its CR1 variance ``G/(G−1)·(N−1)/(N−4)·Σ_g (Σ_{i∈g} w_i e_i)²`` follow from per-arm
(and per-lot) sums that do not depend on the other arm, so the database computes them once
per (metric, variant): a first grouped statement for the sufficient statistics (sums of
deviations from each variant's means), a second one for the residual sums of each arm's fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

from django.db import connection
from scipy import stats as _scipy

from lab.analysis.clusters import cr1_variance, label_of_value, lot_columns_sql
from lab.analysis.moments import hash_join_plan
from lab.errors import Unprocessable
from lab.models import Assignment, Experiment, Measurement, Metric, Unit

_KEYS = ("n", "diff", "se", "t", "df", "p_value", "ci_low", "ci_high", "variance_reduction")


def check_covariate(experiment: Experiment, metrics: list[Metric], key: str) -> Metric:
    """The covariate metric: one of the product's live metrics, measured strictly before the
    experiment's step when both have one (a later measurement can be moved by the
    treatment)."""
    covariate = next((metric for metric in metrics if metric.key == key), None)
    if covariate is None:
        raise Unprocessable(f"covariate: no metric {key!r} in this product")
    step, own = covariate.step, experiment.step
    if step is not None and own is not None and not step.position < own.position:
        raise Unprocessable(
            f"covariate: {key!r} is measured at step {step.key!r} (position {step.position}), "
            f"not before the experiment's step {own.key!r} (position {own.position}): a "
            "covariate measured after the treatment can be moved by it"
        )
    return covariate


@dataclass(frozen=True)
class ArmFit:
    """One arm's fit; its means are ``cy + dy`` and ``cx + dx`` (a shift and a small
    deviation: values near 1e9 keep their digits)."""

    n: int
    cy: float
    cx: float
    dy: float
    dx: float
    sxx: float
    syy: float
    beta: float | None
    # HC2 parts: Σ e²/(1−h), Σ e²·dx/(1−h), Σ e²·dx²/(1−h), dx = x − x̄_a
    a0: float = 0.0
    a1: float = 0.0
    a2: float = 0.0
    # Per lot: (Σ e, Σ e·dx, Σ dx)
    lots: dict | None = None
    ready: bool = False  # the second statement's sums are in


def _pairs_sql(experiment_id: int, metric_ids: list[int], covariate_id: int, lots: str | None):
    """Each measurement of the listed metrics on a unit of the experiment with its unit's
    covariate value (and its lot). Written as the join to run: the experiment's covariate
    values (one per unit, with the unit's variant and lot) joined first, then the metrics'
    measurements against them (``_joins_as_written``)."""
    quote = connection.ops.quote_name
    measurement = quote(Measurement._meta.db_table)
    assignment = quote(Assignment._meta.db_table)
    lot_columns, lot_join, lot_params = "", "", []
    if lots:
        lot_columns, lot_params = lot_columns_sql(lots)
        lot_columns = f", {lot_columns}"
        lot_join = f" JOIN {quote(Unit._meta.db_table)} u ON u.id = mx.unit_id"
    placeholders = ", ".join(["%s"] * len(metric_ids))
    sql = (
        f"SELECT m.metric_id AS metric_key, a.variant_id AS variant_key, m.value AS y, "
        f"mx.value AS x{lot_columns} FROM {measurement} m "
        f"JOIN ({measurement} mx JOIN {assignment} a ON a.unit_id = mx.unit_id "
        f"AND a.experiment_id = %s{lot_join}) "
        f"ON mx.unit_id = m.unit_id AND mx.metric_id = %s "
        f"WHERE m.metric_id IN ({placeholders})"
    )
    return sql, [*lot_params, experiment_id, covariate_id, *metric_ids]


@contextmanager
def _joins_as_written() -> Iterator[None]:
    """The joins of the enclosed statements in the order written (PostgreSQL): the hash is
    built from the experiment's covariate values, not from the metrics' measurements,
    whatever the planner's guesses on tables never analyzed."""
    if connection.vendor != "postgresql":
        yield
        return
    names = ("join_collapse_limit", "from_collapse_limit")
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)), names)
        before = cursor.fetchone()
        cursor.execute("SELECT set_config(%s, '1', true), set_config(%s, '1', true)", names)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                [names[0], before[0], names[1], before[1]],
            )


def _constants_sql(count: int, width: int) -> str:
    one = "(CAST(%s AS BIGINT), CAST(%s AS BIGINT)" + ", CAST(%s AS DOUBLE PRECISION)" * width + ")"
    return ", ".join([one] * count)


def arm_fits(
    experiment: Experiment,
    metrics: list[Metric],
    covariate: Metric,
    shifts: dict[tuple[int, int], tuple[float, float]],
) -> dict[tuple[int, int], ArmFit]:
    """Per (metric id, variant id): the fit of y on x among its units measured on both.
    ``shifts`` gives each group's (y shift, x shift): its means, so the sums are of small
    deviations."""
    if not shifts:
        return {}
    lots = experiment.randomize_by
    metric_ids = sorted({metric for metric, _ in shifts})
    # The sufficient statistics need no lot: the units are joined for the second statement.
    inner, inner_params = _pairs_sql(experiment.id, metric_ids, covariate.id, None)
    params = [v for (m, g), (cy, cx) in shifts.items() for v in (m, g, cy, cx)]
    first = (
        f"WITH g(metric_key, variant_key, cy, cx) AS (VALUES {_constants_sql(len(shifts), 2)}) "
        "SELECT r.metric_key, r.variant_key, COUNT(*), SUM(r.y - g.cy), SUM(r.x - g.cx), "
        "SUM((r.x - g.cx) * (r.x - g.cx)), SUM((r.x - g.cx) * (r.y - g.cy)), "
        "SUM((r.y - g.cy) * (r.y - g.cy)) "
        f"FROM ({inner}) r JOIN g ON g.metric_key = r.metric_key "
        "AND g.variant_key = r.variant_key GROUP BY r.metric_key, r.variant_key"
    )
    fits: dict[tuple[int, int], ArmFit] = {}
    with hash_join_plan(), _joins_as_written(), connection.cursor() as cursor:
        cursor.execute(first, [*params, *inner_params])
        for metric, variant, n, sy, sx, sxx, sxy, syy in cursor.fetchall():
            n = int(n)
            cy, cx = shifts[(metric, variant)]
            sxx_c = max(float(sxx) - float(sx) ** 2 / n, 0.0)
            sxy_c = float(sxy) - float(sx) * float(sy) / n
            syy_c = max(float(syy) - float(sy) ** 2 / n, 0.0)
            fits[(metric, variant)] = ArmFit(
                n=n,
                cy=cy,
                cx=cx,
                dy=float(sy) / n,
                dx=float(sx) / n,
                sxx=sxx_c,
                syy=syy_c,
                beta=sxy_c / sxx_c if sxx_c > 0 else None,
            )
        usable = {key: fit for key, fit in fits.items() if fit.beta is not None and fit.n >= 3}
        if not usable:
            return fits
        constants = [
            v
            for (m, g), f in usable.items()
            for v in (m, g, f.cy, f.cx, f.beta, f.dy - f.beta * f.dx, f.dx, 1.0 / f.n, 1.0 / f.sxx)
        ]
        # Residual e = (y − ȳ) − β(x − x̄) and dx = x − x̄, both from the shifts: the small
        # means of the deviations (mu, dxm) keep the digits the means near 1e9 would not.
        # (Written out in each sum: computed once in a subquery kept apart by OFFSET 0, the
        # sums ran in the leader alone, on the planner's guess of a few rows.)
        dx = "((r.x - g.cx) - g.dxm)"
        e = "(((r.y - g.cy) - g.b * (r.x - g.cx)) - g.mu)"
        odds = f"(1.0 - g.inv_n - {dx} * {dx} * g.inv_sxx)"
        grouped = "r.metric_key, r.variant_key" + (", r.lot, r.solo" if lots else "")
        shown = "r.metric_key, r.variant_key" + (
            f", {label_of_value('r.lot')}, r.solo" if lots else ""
        )
        inner, inner_params = _pairs_sql(experiment.id, metric_ids, covariate.id, lots)
        second = (
            "WITH g(metric_key, variant_key, cy, cx, b, mu, dxm, inv_n, inv_sxx) AS "
            f"(VALUES {_constants_sql(len(usable), 7)}) "
            f"SELECT {shown}, "
            f"SUM({e} * {e} / {odds}), SUM({e} * {e} * {dx} / {odds}), "
            f"SUM({e} * {e} * {dx} * {dx} / {odds}), SUM({e}), SUM({e} * {dx}), SUM({dx}), "
            f"MIN({odds}) "
            f"FROM ({inner}) r JOIN g ON g.metric_key = r.metric_key "
            f"AND g.variant_key = r.variant_key GROUP BY {grouped}"
        )
        cursor.execute(second, [*constants, *inner_params])
        sums: dict[tuple[int, int], dict] = {}
        for row in cursor.fetchall():
            key = (row[0], row[1])
            lot = tuple(row[2:4]) if lots else None
            rest = [float(v) for v in (row[4:] if lots else row[2:])]
            parts = sums.setdefault(key, {})
            if lot in parts:
                # Two stored values of one lot (42 and "42"): one lot.
                old = parts[lot]
                rest = [a + b for a, b in zip(old[:-1], rest[:-1], strict=True)] + [
                    min(old[-1], rest[-1])
                ]
            parts[lot] = rest
    for key, parts in sums.items():
        rows = list(parts.items())
        if any(row[-1] <= 1e-12 for _, row in rows):
            continue  # a unit with leverage 1: HC2 is undefined
        fit = usable[key]
        fits[key] = ArmFit(
            n=fit.n,
            cy=fit.cy,
            cx=fit.cx,
            dy=fit.dy,
            dx=fit.dx,
            sxx=fit.sxx,
            syy=fit.syy,
            beta=fit.beta,
            a0=math.fsum(r[0] for _, r in rows),
            a1=math.fsum(r[1] for _, r in rows),
            a2=math.fsum(r[2] for _, r in rows),
            lots={lot: (r[3], r[4], r[5]) for lot, r in rows} if lots else None,
            ready=True,
        )
    return fits


def adjusted_comparison(control: ArmFit | None, treatment: ArmFit | None, by_lot: bool) -> dict:
    """The ``adjusted`` block of one comparison."""
    block = dict.fromkeys(_KEYS)
    if control is None or treatment is None:
        return block
    n = control.n + treatment.n
    block["n"] = n
    if not (control.ready and treatment.ready):
        return block
    # In rationals: the arms' means near 1e9 differ in their last digits.
    x_means = {id(arm): Fraction(arm.cx) + Fraction(arm.dx) for arm in (control, treatment)}
    y_means = {id(arm): Fraction(arm.cy) + Fraction(arm.dy) for arm in (control, treatment)}
    x_bar = (control.n * x_means[id(control)] + treatment.n * x_means[id(treatment)]) / n
    k = {
        id(arm): float((x_means[id(arm)] - x_bar) / Fraction(arm.sxx))
        for arm in (control, treatment)
    }

    def level(arm):  # the arm's line at x̄
        return y_means[id(arm)] - Fraction(arm.beta) * (x_means[id(arm)] - x_bar)

    diff = float(level(treatment) - level(control))
    if by_lot:
        if control.lots is None or treatment.lots is None:
            return block
        lots = set(control.lots) | set(treatment.lots)

        def score(arm, lot, adjusted=True):
            e0, e1, dx = arm.lots.get(lot, (0.0, 0.0, 0.0))
            if adjusted:
                return e0 / arm.n - k[id(arm)] * e1
            # The unadjusted residuals: y − ȳ_a = e + β·dx.
            return (e0 + arm.beta * dx) / arm.n

        def scores(arm, adjusted=True):
            return {lot: score(arm, lot, adjusted) for lot in lots}

        # Four parameters with the covariate (a, b, c, d), two without.
        variance, g = cr1_variance(scores(control), scores(treatment), n, 4)
        variance_plain, _ = cr1_variance(scores(control, False), scores(treatment, False), n, 2)
        if variance is None:
            return block
        df = g - 1
    else:
        if n <= 4:
            return block

        def hc2(arm):
            kk = k[id(arm)]
            return arm.a0 / arm.n**2 - 2 * kk * arm.a1 / arm.n + kk * kk * arm.a2

        variance = hc2(control) + hc2(treatment)
        # HC2 without the covariate on the same units is Welch's variance.
        variance_plain = control.syy / (control.n * (control.n - 1)) + treatment.syy / (
            treatment.n * (treatment.n - 1)
        )
        df = n - 4
    if not variance > 0.0 or not math.isfinite(variance):
        return block
    se = math.sqrt(variance)
    t = diff / se
    margin = float(_scipy.t.ppf(0.975, df)) * se
    block.update(
        diff=diff,
        se=se,
        t=t,
        df=float(df),
        p_value=2.0 * float(_scipy.t.sf(abs(t), df)),
        ci_low=diff - margin,
        ci_high=diff + margin,
        variance_reduction=1.0 - variance / variance_plain if variance_plain > 0 else None,
    )
    return {key: (v if v is None or math.isfinite(v) else None) for key, v in block.items()}
