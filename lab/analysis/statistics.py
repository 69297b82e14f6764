"""The statistics of the characterization analyses, as pure functions over aggregates.

The database computes counts, exact means, standard deviations, extremes and in-spec counts
per group (``lab.analysis.moments``); this module turns them into the report's numbers. It
never sees individual measurements and imports nothing from Django.

Every value returned is a plain Python ``float``/``int`` or ``None``. A statistic that is
undefined for the data at hand (too few units, zero spread, missing limits) is ``None`` —
never NaN or infinity, which JSON cannot carry and which no reader should have to decode.
The definitions, and how to read them, are in ``docs/results.md``.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import stats as _scipy

from lab.analysis.common import finite

__all__ = [
    "CORRECTIONS",
    "Summary",
    "adjust_p_values",
    "capability_intervals",
    "describe",
    "srm",
    "two_proportion",
    "vs_control",
    "welch",
]


@dataclass(frozen=True)
class Summary:
    """Aggregates of one metric's measurements on one variant.

    ``std`` is the sample standard deviation (n − 1 denominator), ``None`` when ``n < 2``.
    ``mean + mean_error`` is the exact mean to about twice a double's precision: differences
    of close means (values near 1e9 with a spread of 1e-3) keep their digits. ``in_spec``
    counts values with lower ≤ value ≤ upper (a missing limit is unbounded) and is ``None``
    when the metric has no limit at all.
    """

    n: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    in_spec: int | None = None
    mean_error: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if self.in_spec is not None and not 0 <= self.in_spec <= self.n:
            raise ValueError(f"in_spec must be within [0, n={self.n}], got {self.in_spec}")
        if self.std is not None and not self.std >= 0.0:
            raise ValueError(f"std must be >= 0, got {self.std}")


def _std(summary: Summary) -> float | None:
    """Sample standard deviation, ``None`` below two values (or when it does not fit)."""
    if summary.n < 2 or summary.mean is None:
        return None
    return finite(summary.std)


def _capability(
    mean: float | None,
    std: float | None,
    lower: float | None,
    upper: float | None,
    mean_error: float = 0.0,
) -> tuple[float | None, float | None]:
    """(Cp, Cpk). Cpk is one-sided when only one limit exists.

    Differences are taken of halved operands (exact for doubles), so that limits of ±1.7e308
    give a finite Cp instead of overflowing. Cpk's distances to the limits are those of the
    exact mean ``mean + mean_error``, in rationals, rounded once: with limits a few units of
    the last digit from the mean (1e9 ± 2e-7), the mean rounded to a double first would move
    them by a large share of their width.
    """
    if mean is None or std is None or std <= 0.0:
        return None, None
    cp = None
    if lower is not None and upper is not None:
        cp = (upper / 2 - lower / 2) / (3.0 * std)
    exact_mean = Fraction(mean) + Fraction(mean_error if math.isfinite(mean_error) else 0.0)
    sides = []
    if upper is not None:
        sides.append(float((Fraction(upper) - exact_mean) / 2) / (1.5 * std))
    if lower is not None:
        sides.append(float((exact_mean - Fraction(lower)) / 2) / (1.5 * std))
    cpk = min(sides) if sides else None
    return finite(cp), finite(cpk)


def capability_intervals(
    n: int, cp: float | None, cpk: float | None, confidence: float = 0.95
) -> dict:
    """Two-sided ``confidence`` intervals of Cp (chi-square) and Cpk (Bissell's normal
    approximation), as in the NIST/SEMATECH e-Handbook §6.1.6:

    ``Cp·sqrt(χ²(α/2, n−1)/(n−1))`` … ``Cp·sqrt(χ²(1−α/2, n−1)/(n−1))`` and
    ``Cpk ∓ z(1−α/2)·sqrt(1/(9n) + Cpk²/(2(n−1)))``. ``None`` where the index is ``None``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    result = dict.fromkeys(("cp_ci_low", "cp_ci_high", "cpk_ci_low", "cpk_ci_high"))
    if n < 2:
        return result
    df = n - 1
    if cp is not None:
        result["cp_ci_low"] = finite(cp * math.sqrt(float(_scipy.chi2.ppf(alpha / 2, df)) / df))
        result["cp_ci_high"] = finite(
            cp * math.sqrt(float(_scipy.chi2.ppf(1 - alpha / 2, df)) / df)
        )
    if cpk is not None:
        z = float(_scipy.norm.ppf(1 - alpha / 2))
        # sqrt(1/(9n) + Cpk²/(2(n−1))) written with hypot: no overflow for a huge Cpk.
        half_width = z * math.hypot(1.0 / math.sqrt(9.0 * n), cpk / math.sqrt(2.0 * df))
        result["cpk_ci_low"] = finite(cpk - half_width)
        result["cpk_ci_high"] = finite(cpk + half_width)
    return result


def describe(summary: Summary, lower: float | None, upper: float | None) -> dict:
    """Per-variant description of one metric: n, mean, std, min, max, yield, cp, cpk and the
    intervals of cp and cpk."""
    has_limits = lower is not None or upper is not None
    mean = finite(summary.mean) if summary.n > 0 else None
    std = _std(summary)
    yield_ = None
    if has_limits and summary.n > 0 and summary.in_spec is not None:
        yield_ = summary.in_spec / summary.n
    cp, cpk = _capability(mean, std, lower, upper, summary.mean_error if mean is not None else 0.0)
    return {
        "n": int(summary.n),
        "mean": mean,
        "std": finite(std),
        "min": finite(summary.min) if summary.n > 0 else None,
        "max": finite(summary.max) if summary.n > 0 else None,
        "yield": finite(yield_),
        "cp": cp,
        "cpk": cpk,
        **capability_intervals(summary.n, cp, cpk),
    }


_WELCH_KEYS = ("diff", "t", "df", "p_value", "ci_low", "ci_high")


def welch(control: Summary, treatment: Summary, confidence: float = 0.95) -> dict:
    """Welch's unequal-variance t-test of treatment mean − control mean.

    Returns diff, t, the Welch–Satterthwaite df, the two-sided p_value and the
    ``confidence`` interval of the difference (ci_low, ci_high). All ``None`` when the test
    is undefined: fewer than two values on either side, or no spread on both sides.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    undefined = dict.fromkeys(_WELCH_KEYS)
    std_c, std_t = _std(control), _std(treatment)
    mean_c, mean_t = finite(control.mean), finite(treatment.mean)
    if std_c is None or std_t is None or mean_c is None or mean_t is None:
        return undefined

    # Each side's standard error, combined with hypot: tiny or huge spreads neither underflow
    # nor overflow (the squares are never formed).
    se_c = std_c / math.sqrt(control.n)
    se_t = std_t / math.sqrt(treatment.n)
    se = math.hypot(se_c, se_t)
    # Difference of the double-double means: close means keep their digits.
    diff = (mean_t - mean_c) + (treatment.mean_error - control.mean_error)
    if not (math.isfinite(se) and se > 0.0 and math.isfinite(diff)):
        return undefined
    # Welch–Satterthwaite written with each side's share of the squared standard error.
    frac_c = (se_c / se) ** 2
    frac_t = (se_t / se) ** 2
    df = 1.0 / (frac_c**2 / (control.n - 1) + frac_t**2 / (treatment.n - 1))

    # The same statistic as scipy.stats.ttest_ind_from_stats(equal_var=False), taken from the
    # t distribution directly so the p-value and the interval share this one df.
    t = diff / se
    p_value = 2.0 * float(_scipy.t.sf(abs(t), df))
    margin = float(_scipy.t.ppf(0.5 + confidence / 2.0, df)) * se
    return {
        "diff": finite(diff),
        "t": finite(t),
        "df": finite(df),
        "p_value": finite(p_value),
        "ci_low": finite(diff - margin),
        "ci_high": finite(diff + margin),
    }


_PROPORTION_KEYS = ("yield_diff", "yield_ci_low", "yield_ci_high", "yield_p_value")


def two_proportion(
    control_n: int,
    control_k: int,
    treatment_n: int,
    treatment_k: int,
    confidence: float = 0.95,
) -> dict:
    """Compare two yields: treatment share in spec − control share in spec.

    ``yield_p_value`` is the two-sided pooled two-proportion z-test without continuity
    correction; ``yield_ci_low``/``yield_ci_high`` the unpooled (Wald) interval.

    Undefined parts are ``None``: everything when either side has no units; the p-value when
    the pooled proportion is 0 or 1 (every unit in spec, or none — nothing to test); the
    interval when both observed yields are 0 or 1, where the Wald interval would collapse
    to a single point and claim a certainty the data cannot give. The difference itself is
    reported whenever both sides have units.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    for name, n, k in (("control", control_n, control_k), ("treatment", treatment_n, treatment_k)):
        if n < 0 or not 0 <= k <= n:
            raise ValueError(f"{name}: need 0 <= k <= n, got n={n}, k={k}")
    result = dict.fromkeys(_PROPORTION_KEYS)
    if control_n == 0 or treatment_n == 0:
        return result

    p_c = control_k / control_n
    p_t = treatment_k / treatment_n
    diff = p_t - p_c
    result["yield_diff"] = finite(diff)

    se_unpooled = math.sqrt(p_c * (1.0 - p_c) / control_n + p_t * (1.0 - p_t) / treatment_n)
    if se_unpooled > 0.0:
        margin = float(_scipy.norm.ppf(0.5 + confidence / 2.0)) * se_unpooled
        result["yield_ci_low"] = finite(diff - margin)
        result["yield_ci_high"] = finite(diff + margin)

    pooled = (control_k + treatment_k) / (control_n + treatment_n)
    if 0.0 < pooled < 1.0:
        se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / treatment_n))
        z = diff / se_pooled
        result["yield_p_value"] = finite(2.0 * float(_scipy.norm.sf(abs(z))))
    return result


def vs_control(control: Summary, treatment: Summary, *, has_limits: bool) -> dict:
    """The report's ``vs_control`` block: Welch on the means, and on the yields when the
    metric has limits (otherwise the yield keys are ``None``)."""
    block = welch(control, treatment)
    if has_limits and control.in_spec is not None and treatment.in_spec is not None:
        block.update(two_proportion(control.n, control.in_spec, treatment.n, treatment.in_spec))
    else:
        block.update(dict.fromkeys(_PROPORTION_KEYS))
    return block


def srm(counts: Mapping[str, int], weights: Mapping[str, float]) -> dict:
    """Sample-ratio-mismatch check: Pearson chi-square goodness of fit of the assignment
    counts against the variants' weights.

    ``weights`` names the variants taken into account (the ones not removed); a variant
    missing from ``counts`` has a count of 0. Only variants with a positive weight take part
    in the test: a zero-weight variant never receives units by hashing, so units found on it
    (forced, or assigned before its weight was set to 0) say nothing about the split. Its
    expected count is reported as 0.0 and its observed count as it is.

    The expected count of a tested variant is (units on tested variants) × (its weight / sum
    of tested weights); ``df`` = tested variants − 1. ``chi2``, ``df`` and ``p_value`` are
    ``None`` when fewer than two variants have a positive weight or when they have no units.
    """
    unknown = set(counts) - set(weights)
    if unknown:
        raise ValueError(f"counts for variants without a weight: {sorted(unknown)}")
    for key, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight of {key!r} must be finite and >= 0, got {weight}")
    observed = {key: int(counts.get(key, 0)) for key in weights}
    for key, count in observed.items():
        if count < 0:
            raise ValueError(f"count of {key!r} must be >= 0, got {count}")

    tested = [key for key, weight in weights.items() if weight > 0.0]
    tested_total = sum(observed[key] for key in tested)
    weight_total = math.fsum(weights[key] for key in tested)
    expected = dict.fromkeys(weights, 0.0)
    for key in tested:
        expected[key] = tested_total * (weights[key] / weight_total)

    chi2 = df = p_value = None
    if len(tested) >= 2 and tested_total > 0:
        # A vanishingly small expected count makes the statistic overflow; that is read below
        # as "no test", so numpy's warning about it is noise.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            result = _scipy.chisquare(
                [observed[key] for key in tested], [expected[key] for key in tested]
            )
        chi2, p_value = finite(result.statistic), finite(result.pvalue)
        if chi2 is not None and p_value is not None:
            df = len(tested) - 1
        else:
            chi2 = p_value = None
    return {
        "chi2": chi2,
        "df": df,
        "p_value": p_value,
        "counts": observed,
        "expected": {key: float(value) for key, value in expected.items()},
    }


# The corrections offered on the results, by the name of the query parameter, and the method
# of statsmodels.stats.multitest.multipletests each one is.
CORRECTIONS = {
    "holm": "holm",
    "bh": "fdr_bh",
    "bonferroni": "bonferroni",
    "none": None,
}


def adjust_p_values(p_values: list[float | None], correction: str) -> list[float | None]:
    """The p-values adjusted for multiple comparisons within one family.

    ``None`` entries (undefined tests) are not part of the family and stay ``None``;
    ``correction`` is a key of ``CORRECTIONS`` (``none`` returns the p-values unchanged).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {correction!r}")
    method = CORRECTIONS[correction]
    present = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    if not present:
        return adjusted
    values = [float(p_values[i]) for i in present]
    if method is None:
        corrected = values
    else:
        from statsmodels.stats.multitest import multipletests

        # statsmodels' Holm ends with gc.collect(): a full collection of every object of the
        # process, which in a Django process costs more than the correction itself. With them
        # frozen it has only the call's own objects to scan; unfrozen, they return to the
        # oldest generation (load_tests/RESULTS.md, "the statsmodels collection").
        gc.freeze()
        try:
            corrected = [float(p) for p in multipletests(values, method=method)[1]]
        finally:
            gc.unfreeze()
    for i, p in zip(present, corrected, strict=True):
        adjusted[i] = finite(min(max(p, 0.0), 1.0))
    return adjusted
