"""Factorial analysis across experiments that share units (docs/results.md §11).

Typically one experiment per process step: does each step's change matter, and do they
interact? Each experiment is a factor whose levels are its variants that are not removed
(creation order). A unit counts when it has an assignment to a live variant in every listed
experiment and a measurement of the metric. The database aggregates per cell (one cell per
combination of levels: count, exact mean, within-cell sum of squares, in-spec count; the two
statements of ``lab.analysis.moments``); ``lab.analysis.anova`` turns the cells into the
Type III table. No measurement row reaches Python.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from lab.analysis.anova import Cell, effects, type3_anova
from lab.analysis.moments import Moments, grouped_moments
from lab.analysis.rows import factorial_rows
from lab.errors import BadRequest
from lab.models import Experiment, Metric, Product, Status, Variant
from lab.selectors.experiments import experiment_get
from lab.selectors.metrics import metric_get

MAX_FACTORS = 3


@dataclass(frozen=True)
class Factor:
    experiment: Experiment
    levels: list[Variant]


def factors_of(product: Product, keys: list[str]) -> list[Factor]:
    factors = []
    for key in keys:
        experiment = experiment_get(product=product, key=key)
        levels = list(experiment.variants.exclude(status=Status.REMOVED).order_by("id"))
        factors.append(Factor(experiment, levels))
    return factors


def cell_moments(factors: list[Factor], metric: Metric) -> dict[tuple, Moments]:
    """Per combination of variant ids (one per factor): the moments of the metric."""
    rows = factorial_rows(metric, [(f.experiment.id, [v.id for v in f.levels]) for f in factors])
    groups = tuple(f"k{i}" for i in range(len(factors)))
    return grouped_moments(rows, groups=groups, sums=("in_spec",))


def factorial_analysis(*, product: Product, experiments: list[str], metric: str) -> dict:
    """``experiments``: 1 to MAX_FACTORS distinct keys (the API's query schema checks them)."""
    keys = list(experiments)
    metric_obj = metric_get(product=product, key=metric)
    factors = factors_of(product, keys)
    for factor in factors:
        if len(factor.levels) < 2:
            raise BadRequest(
                f"experiment {factor.experiment.key!r} needs at least 2 variants that are "
                "not removed to be a factor"
            )
    moments = cell_moments(factors, metric_obj) if all(f.levels for f in factors) else {}
    has_limits = metric_obj.lower_limit is not None or metric_obj.upper_limit is not None

    cells, anova_cells, empty = [], [], None
    for combination in itertools.product(*(factor.levels for factor in factors)):
        key = tuple(variant.id for variant in combination)
        m = moments.get(key)
        names = {f.experiment.key: v.key for f, v in zip(factors, combination, strict=True)}
        if m is None:
            empty = empty or names
            cells.append({"variants": names, "n": 0, "mean": None, "std": None, "yield": None})
            continue
        cells.append(
            {
                "variants": names,
                "n": m.n,
                "mean": m.mean,
                "std": m.std,
                "yield": m.sums["in_spec"] / m.n if has_limits else None,
            }
        )
        anova_cells.append(Cell(n=m.n, mean=m.mean, mean_error=m.mean_error, sum_sq=m.sum_sq))

    report = {
        "experiments": keys,
        "metric": metric_obj.key,
        "n": sum(cell["n"] for cell in cells),
        "sum_sq_type": 3,
        "cells": cells,
        "anova": None,
        "anova_note": None,
        "r_squared": None,
        "residual_std": None,
    }
    by_lot = [f.experiment.key for f in factors if f.experiment.randomize_by]
    if by_lot:
        report["warning"] = (
            f"randomized by lot: {', '.join(by_lot)}; the F tests treat units as independent, "
            "which overstates the evidence when units of one lot are alike (docs/results.md, "
            "'Lots')"
        )
    if empty is not None:
        where = ", ".join(f"{e}={v}" for e, v in empty.items())
        report["anova_note"] = (
            f"no measured unit in the cell {where}: the full factorial model needs every "
            "combination of variants"
        )
        return report
    table = type3_anova([len(f.levels) for f in factors], anova_cells)
    rows = []
    for effect, row in zip(effects(len(factors)), table["effects"], strict=True):
        source = ":".join(keys[i] for i in effect)
        rows.append({"source": source, **{k: v for k, v in row.items() if k != "effect"}})
    rows.append({"source": "residual", **table["residual"]})
    rows.append({"source": "total", **table["total"]})
    report.update(anova=rows, r_squared=table["r_squared"], residual_std=table["residual_std"])
    if table["residual"]["df"] == 0:
        report["anova_note"] = (
            "every cell has a single unit: no residual degrees of freedom, so no F test"
        )
    return report
