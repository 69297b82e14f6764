"""Analysis of a designed experiment (docs/designs.md, "Analysis").

The database aggregates the measured units of the metric per combination of the factors'
stored levels (count, exact mean, within-combination sum of squares: the two statements of
``lab.analysis.moments``); a combination that is a run of the design is that run's cell, any
other (a unit missing a factor's assignment, or forced off the fraction) is excluded and
counted. Per-run sums are sufficient for a regular design: with every run observed, the model
of the intercept and one ±1 column per estimable alias chain is saturated in the runs, so the
OLS fit is the runs' means, its coefficients are ``X' ȳ / runs`` (X the runs × runs ±1
matrix, X'X = runs·I) and the residual is the within-run sum of squares, on N − runs degrees
of freedom. Each coefficient's variance is σ²·Σ(1/n_r)/runs². Without residual degrees of
freedom (one unit per run), Lenth's pseudo standard error judges the effects instead.
"""

from __future__ import annotations

import math
import statistics

from django.db import connection
from scipy import stats

from lab.analysis.common import table
from lab.analysis.moments import grouped_moments
from lab.analysis.rows import Rows
from lab.models import Assignment, Design, DesignUnit, Metric, Product
from lab.selectors.designs import design_fraction, design_get
from lab.selectors.metrics import metric_get
from rules.designs import LETTERS, Fraction, effect_name


def level_code(levels) -> int:
    """The code of a unit whose factor j is at ``levels[j]`` (0 or 1): two bits per factor,
    bit 2j for level 0 and bit 2j + 1 for level 1 (``level_rows``)."""
    return sum((2 if level else 1) << (2 * j) for j, level in enumerate(levels))


def level_rows(design: Design, metric: Metric) -> Rows:
    """Every measurement of the metric with ``k0`` = the code of its unit's stored levels
    (``level_code``), NULL when the unit has no assignment in any factor.

    On PostgreSQL the code is the unit's row of ``DesignUnit``, which the database keeps
    (migration 0012): one row per unit to join, where the assignments have one per unit and
    factor. Elsewhere one pass over the factors' assignments groups them by unit (each
    unit's factors OR-ed into one code), and one join brings the code to the unit's
    measurement. A factor without an
    assignment, or whose stored variant is neither level, leaves both of its bits clear, so
    the code is no run's and the unit is excluded. The alternative, one join with the
    assignments per factor, makes the database build and probe one hash table of all the
    measured units per factor."""
    if connection.vendor == "postgresql":
        return Rows(
            columns="d.code AS k0, m.value AS x, m.in_spec AS in_spec",
            joins=(
                f"LEFT JOIN {table(DesignUnit)} d ON d.unit_id = m.unit_id AND d.design_id = %s"
            ),
            params=(design.id,),
            metrics=(metric,),
        )
    levels, experiments = [], []
    for j, factor in enumerate(design.factor_list):
        experiments.append(int(factor.experiment_id))
        # Ids from the database, written as integer literals: the select list of ``Rows``
        # takes no parameters. A unit has one assignment per experiment, so the factors' bits never
        # overlap and their SUM is their OR, on PostgreSQL and SQLite alike.
        low, high = int(factor.low_id), int(factor.high_id)
        levels.append(f"WHEN {low} THEN {1 << (2 * j)} WHEN {high} THEN {2 << (2 * j)}")
    code = f"CASE a.variant_id {' '.join(levels)} ELSE 0 END"
    placeholders = ", ".join(["%s"] * len(experiments))
    return Rows(
        columns="d.code AS k0, m.value AS x, m.in_spec AS in_spec",
        joins=(
            f"LEFT JOIN (SELECT a.unit_id, SUM({code}) AS code FROM {table(Assignment)} a "
            f"WHERE a.experiment_id IN ({placeholders}) GROUP BY a.unit_id) d "
            "ON d.unit_id = m.unit_id"
        ),
        params=tuple(experiments),
        metrics=(metric,),
    )


def run_cells(design: Design, fraction: Fraction, metric: Metric):
    """{run: Moments} over the units whose levels form a run, and the count of the others."""
    codes = {level_code(levels): run for run, levels in enumerate(fraction.runs_table, start=1)}
    moments = grouped_moments(level_rows(design, metric), groups=("k0",))
    cells, excluded = {}, 0
    for (code,), m in moments.items():
        run = codes.get(code) if code is not None else None
        if run is None:
            excluded += m.n
        else:
            cells[run] = m
    return cells, excluded


def chain_signs(fraction: Fraction, term: int) -> list[int]:
    """The ±1 column of an effect over the runs (standard order)."""
    signs = []
    for levels in fraction.runs_table:
        sign = 1
        for j, level in enumerate(levels):
            if term >> j & 1:
                sign *= 2 * level - 1
        signs.append(sign)
    return signs


def lenth(effects: list[float]) -> tuple[float, float]:
    """Lenth's (1989) pseudo standard error of the effects and the margin of error
    t(0.975, m/3)·PSE."""
    absolute = [abs(e) for e in effects]
    s0 = 1.5 * statistics.median(absolute)
    trimmed = [a for a in absolute if a < 2.5 * s0]
    pse = 1.5 * statistics.median(trimmed) if trimmed else 0.0
    return pse, float(stats.t.ppf(0.975, len(effects) / 3)) * pse


def effects_report(fraction: Fraction, cells: dict) -> dict:
    """The effects of every estimable alias chain from the runs' cells (all runs observed)."""
    runs = fraction.runs
    n = sum(cell.n for cell in cells.values())
    df = n - runs
    sse = math.fsum(cells[r].sum_sq for r in range(1, runs + 1))
    inverse_counts = math.fsum(1 / cells[r].n for r in range(1, runs + 1))
    sigma2 = sse / df if df > 0 else None
    rows = []
    for term, aliases in fraction.chains:
        signs = chain_signs(fraction, term)
        # Σ ±(mean + mean_error), summed exactly then rounded once.
        total = math.fsum(
            s * part
            for s, r in zip(signs, range(1, runs + 1), strict=True)
            for part in (cells[r].mean, cells[r].mean_error)
        )
        coefficient = total / runs
        row = {
            "term": effect_name(term),
            "aliases": [effect_name(a) for a in aliases],
            "coefficient": coefficient,
            "effect": 2 * coefficient,
            "se": None,
            "t": None,
            "p_value": None,
        }
        if sigma2 is not None:
            se = math.sqrt(sigma2 * inverse_counts) / runs
            if se > 0:
                t = coefficient / se
                row.update(se=se, t=t, p_value=float(2 * stats.t.sf(abs(t), df)))
            else:
                row["se"] = se
        rows.append(row)
    report = {"residual_df": df, "pse": None, "margin_of_error": None, "effects": rows}
    if df == 0:
        pse, margin = lenth([row["effect"] for row in rows])
        report.update(pse=pse, margin_of_error=margin)
        for row in rows:
            row["active"] = abs(row["effect"]) > margin
    return report


def design_analysis(*, product: Product, design: str, metric: str) -> dict:
    design_obj = design_get(product=product, key=design)
    metric_obj = metric_get(product=product, key=metric)
    fraction = design_fraction(design_obj)
    cells, excluded = run_cells(design_obj, fraction, metric_obj)
    report = {
        "design": design_obj.key,
        "metric": metric_obj.key,
        "factors": {
            LETTERS[j]: factor.experiment.key for j, factor in enumerate(design_obj.factor_list)
        },
        "n": sum(cell.n for cell in cells.values()),
        "excluded": excluded,
        "runs": fraction.runs,
        "runs_observed": len(cells),
        "residual_df": None,
        "pse": None,
        "margin_of_error": None,
        "effects": None,
        "note": None,
    }
    if len(cells) < fraction.runs:
        missing = [r for r in range(1, fraction.runs + 1) if r not in cells]
        shown = ", ".join(map(str, missing[:10])) + (", …" if len(missing) > 10 else "")
        report["note"] = (
            f"no measured unit in run {shown}: every run needs one for the effects to be estimable"
        )
        return report
    report.update(effects_report(fraction, cells))
    return report
