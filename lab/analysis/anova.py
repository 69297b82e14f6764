"""Type III analysis of variance of a full factorial, from per-cell sufficient statistics.

Pure numerics (no Django). For the full factorial cell-means model the least-squares fit is
the cell means, so everything follows from each cell's count ``n``, mean and within-cell sum
of squared deviations:

- residual SS = Σ within-cell SS, df = N − cells;
- total (corrected) SS = residual SS + Σ n_c (mean_c − grand mean)², df = N − 1;
- for an effect E (a main effect or an interaction), with sum-to-zero (effect) coding, the
  Type III hypothesis is ``L μ = 0`` where ``L`` is the Kronecker product, over the factors,
  of the contrast matrix ``[I | −1]`` for a factor in E and a row of ones for a factor not in
  E; its sum of squares is the quadratic form ``(Lμ)ᵀ (L D⁻¹ Lᵀ)⁻¹ (Lμ)`` with
  ``D = diag(n_c)``, and its df the product of (levels − 1) over E.

This is what R's ``car::Anova(type = 3)`` with ``contr.sum``, Minitab's adjusted SS and
``statsmodels`` ``anova_lm(typ=3)`` with ``C(x, Sum)`` compute; docs/results.md explains how
to read it. Cell means arrive as double-doubles (``mean + mean_error``); the contrasts ``Lμ``
(integer coefficients) and the between-cells sum of squares are taken in rational arithmetic
and rounded once, so neither a large offset (1e12 + 0.1) nor cell means far apart (1 and 1e6,
with an interaction at the level of the noise) cost digits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import stats as _scipy

from lab.analysis.common import finite


@dataclass(frozen=True)
class Cell:
    n: int
    mean: float
    mean_error: float
    sum_sq: float


def effects(factor_count: int) -> list[tuple[int, ...]]:
    """Main effects in order, then two-way interactions, then three-way (…)."""
    order = []
    for size in range(1, factor_count + 1):
        order.extend(itertools.combinations(range(factor_count), size))
    return order


def _contrast(levels: int) -> np.ndarray:
    return np.hstack([np.eye(levels - 1), -np.ones((levels - 1, 1))])


def type3_anova(levels: Sequence[int], cells: Sequence[Cell]) -> dict:
    """The ANOVA table of a full factorial with ``levels[i]`` levels per factor.

    ``cells`` are in lexicographic order of the level combination (first factor slowest),
    none empty. Returns ``{"effects": [(effect, df, sum_sq), ...], "residual": (df, sum_sq),
    "total": (df, sum_sq)}`` plus the F tests, mean squares, r² and residual std.
    """
    count = int(np.prod(levels))
    if len(cells) != count or any(cell.n < 1 for cell in cells):
        raise ValueError("every cell of the full factorial needs at least one value")
    n = np.array([cell.n for cell in cells], dtype=float)
    means = [Fraction(cell.mean) + Fraction(cell.mean_error) for cell in cells]
    total_n = int(n.sum())
    residual_df = total_n - count
    residual_ss = math.fsum(cell.sum_sq for cell in cells)
    grand = sum(cell.n * mean for cell, mean in zip(cells, means, strict=True)) / total_n
    between = sum(cell.n * (mean - grand) ** 2 for cell, mean in zip(cells, means, strict=True))
    total_ss = residual_ss + float(between)

    residual_ms = residual_ss / residual_df if residual_df > 0 else None
    rows = []
    for effect in effects(len(levels)):
        matrix = np.ones((1, 1))
        for factor, k in enumerate(levels):
            part = _contrast(k) if factor in effect else np.ones((1, k))
            matrix = np.kron(matrix, part)
        # Lμ exactly: the coefficients are integers, the means rationals.
        estimate = np.array(
            [
                float(sum(int(c) * mean for c, mean in zip(row, means, strict=True) if c))
                for row in matrix
            ]
        )
        covariance = (matrix / n) @ matrix.T
        sum_sq = float(estimate @ np.linalg.solve(covariance, estimate))
        df = int(np.prod([levels[f] - 1 for f in effect]))
        mean_sq = sum_sq / df
        f_value = p_value = None
        if residual_ms is not None and residual_ms > 0.0:
            f_value = finite(mean_sq / residual_ms)
            if f_value is not None:
                p_value = finite(_scipy.f.sf(f_value, df, residual_df))
        rows.append(
            {
                "effect": effect,
                "df": df,
                "sum_sq": finite(sum_sq),
                "mean_sq": finite(mean_sq),
                "f": f_value,
                "p_value": p_value,
            }
        )
    return {
        "effects": rows,
        "residual": {
            "df": residual_df,
            "sum_sq": finite(residual_ss),
            "mean_sq": finite(residual_ms) if residual_ms is not None else None,
        },
        "total": {"df": total_n - 1, "sum_sq": finite(total_ss)},
        "r_squared": finite(1.0 - residual_ss / total_ss) if total_ss > 0.0 else None,
        "residual_std": (finite(math.sqrt(residual_ms)) if residual_ms is not None else None),
    }
