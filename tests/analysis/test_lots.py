"""Cluster inference of experiments randomized by lot (docs/results.md, "Lots").

Reference: statsmodels ``OLS(y, [1, T]).fit(cov_type="cluster", cov_kwds={"groups": lot},
use_t=True)`` — CR1 (G/(G−1)·(N−1)/(N−K)) with t(G − 1) — on the units' values, for the mean
and for the in-spec indicator; the intraclass correlation from its definition (Donner & Klar)
over the raw values.
"""

import math
from datetime import timedelta

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from lab.models import Assignment, Measurement, Unit
from tests.analysis.builders import T0

RESULTS = "/products/widget/experiments/etch/results"
TIGHT = 1e-10


def build(plant, units, *, lower=None, upper=None, randomize_by="lot"):
    """``units``: (lot attribute or None, variant, value or None (not measured), source) per
    unit."""
    plant.experiment("etch", ["a", "b"], randomize_by=randomize_by)
    plant.metric("y", lower_limit=lower, upper_limit=upper)
    created = Unit.objects.bulk_create(
        (
            Unit(
                product=plant.product,
                key=f"SN-{i:06d}",
                attributes={} if lot is None else {"lot": lot},
            )
            for i, (lot, *_rest) in enumerate(units)
        ),
        batch_size=500,
    )
    Assignment.objects.bulk_create(
        (
            Assignment(
                experiment=plant.experiments["etch"],
                unit=unit,
                variant=plant.variants[("etch", variant)],
                source=source,
            )
            for unit, (_lot, variant, _value, source) in zip(created, units, strict=True)
        ),
        batch_size=500,
    )
    Measurement.objects.bulk_create(
        (
            Measurement(
                metric=plant.metrics["y"],
                unit=unit,
                value=value,
                measured_at=T0 + timedelta(seconds=i),
            )
            for i, (unit, (_lot, _variant, value, _source)) in enumerate(
                zip(created, units, strict=True)
            )
            if value is not None
        ),
        batch_size=500,
    )


def lot_key(lot, i):
    # As the report reads a lot: its text (42 and "42" are one lot); no lot: a lot of its own.
    if lot is None:
        return f"unit-{i}"
    if isinstance(lot, float) and lot.is_integer():
        return str(int(lot))
    return str(lot)


def reference(units, values):
    """statsmodels' CR1 fit of values ~ 1 + T, with df = G − 1."""
    treated = np.array([1.0 if variant == "b" else 0.0 for _, variant, *_ in units])
    groups = np.unique(
        [lot_key(lot, i) for i, (lot, *_r) in enumerate(units)], return_inverse=True
    )[1]
    fit = sm.OLS(np.asarray(values, dtype=float), sm.add_constant(treated)).fit(
        cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
    )
    g = len(set(groups))
    t = fit.params[1] / fit.bse[1]
    df = g - 1
    margin = stats.t.ppf(0.975, df) * fit.bse[1]
    # statsmodels' own df for the cluster t-test is G − 1 as well
    assert fit.pvalues[1] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-12)
    return {
        "diff": fit.params[1],
        "t": t,
        "df": df,
        "p_value": 2 * stats.t.sf(abs(t), df),
        "ci_low": fit.params[1] - margin,
        "ci_high": fit.params[1] + margin,
    }


def icc_reference(units):
    """Donner & Klar's ANOVA estimator, lots nested in arms, from the raw values."""
    cells = {}
    for i, (lot, variant, value, _source) in enumerate(units):
        cells.setdefault((variant, lot_key(lot, i)), []).append(value)
    arms = {}
    for (variant, _), values in cells.items():
        arms.setdefault(variant, []).extend(values)
    n, g = sum(len(v) for v in cells.values()), len(cells)
    arm_mean = {arm: np.mean(v) for arm, v in arms.items()}
    msb = sum(len(v) * (np.mean(v) - arm_mean[arm]) ** 2 for (arm, _), v in cells.items()) / (g - 2)
    msw = sum(((np.array(v) - np.mean(v)) ** 2).sum() for v in cells.values()) / (n - g)
    m0 = (
        n
        - sum(
            sum(len(v) ** 2 for (a, _), v in cells.items() if a == arm) / len(values)
            for arm, values in arms.items()
        )
    ) / (g - 2)
    icc = max((msb - msw) / (msb + (m0 - 1) * msw), 0.0)
    return icc, 1 + (m0 - 1) * icc


def assert_cluster_inference(report, units, *, limits=None):
    [metric] = report["metrics"]
    b = metric["variants"]["b"]["vs_control"]
    values = [value for _lot, _variant, value, _source in units]
    expected = reference(units, values)
    for key, value in expected.items():
        assert b[key] == pytest.approx(value, rel=TIGHT, abs=1e-300), key
    icc, design_effect = icc_reference(units)
    assert b["icc"] == pytest.approx(icc, rel=TIGHT, abs=1e-14)
    assert b["design_effect"] == pytest.approx(design_effect, rel=TIGHT)
    if limits is not None:
        low, high = limits
        inside = [1.0 if low <= v <= high else 0.0 for v in values]
        expected = reference(units, inside)
        assert b["yield_diff"] == pytest.approx(expected["diff"], rel=TIGHT)
        for ours, theirs in (
            ("yield_p_value", "p_value"),
            ("yield_ci_low", "ci_low"),
            ("yield_ci_high", "ci_high"),
        ):
            assert b[ours] == pytest.approx(expected[theirs], rel=TIGHT), ours


def lots_design(rng, sizes_a, sizes_b, lot_sd=1.0, unit_sd=0.3, effect=0.0, source="hash"):
    units = []
    for variant, sizes, shift in (("a", sizes_a, 0.0), ("b", sizes_b, effect)):
        for j, size in enumerate(sizes):
            lot = f"{variant.upper()}{j}"
            centre = 10.0 + shift + rng.normal(0.0, lot_sd)
            units += [
                (lot, variant, float(centre + rng.normal(0.0, unit_sd)), source)
                for _ in range(size)
            ]
    return units


def test_results__balanced_lots__cluster_inference_equals_statsmodels_cr1(tenant, plant):
    # Given 4 lots of 25 units per arm, a lot-to-lot spread 3× the unit spread
    rng = np.random.default_rng(1)
    units = lots_design(rng, [25] * 4, [25] * 4, effect=0.5)
    build(plant, units, lower=9.0, upper=11.0)
    # When
    report = tenant.get(RESULTS).json()
    # Then: lots are the units of inference
    assert (report["randomized_by"], report["inference"]) == ("lot", "cluster")
    [metric] = report["metrics"]
    assert metric["variants"]["a"]["clusters"] == metric["variants"]["b"]["clusters"] == 4
    assert metric["variants"]["b"]["vs_control"]["df"] == 7
    assert_cluster_inference(report, units, limits=(9.0, 11.0))
    # And the sample-ratio check counts lots, not units
    assert report["srm"]["counts"] == {"a": 4, "b": 4}


def test_results__unbalanced_lots_single_unit_lot_and_units_without_a_lot(tenant, plant):
    # Given lots of 1 to 40 units, numeric lot ids (42 and "42" are one lot) and 3 units
    # without the attribute (each a lot of its own)
    rng = np.random.default_rng(2)
    units = lots_design(rng, [1, 7, 40, 12, 3], [30, 2, 9, 1], effect=0.2)
    units += [(42, "a", 10.3, "hash"), ("42", "a", 10.1, "hash"), (42.0, "a", 9.9, "hash")]
    units += [(None, "b", 10.0 + 0.1 * k, "forced") for k in range(3)]
    build(plant, units, lower=9.5, upper=12.0)
    report = tenant.get(RESULTS).json()
    [metric] = report["metrics"]
    assert metric["variants"]["a"]["clusters"] == 6
    assert metric["variants"]["b"]["clusters"] == 7
    assert_cluster_inference(report, units, limits=(9.5, 12.0))


def test_results__lot_split_across_arms_by_forcing__one_cluster_with_both_arms(tenant, plant):
    # Given lot S1 forced partly onto a, partly onto b (an operator split it)
    rng = np.random.default_rng(3)
    units = lots_design(rng, [10, 10, 10], [10, 10, 10], effect=1.0)
    units += [("S1", "a", float(11 + rng.normal(0, 0.3)), "forced") for _ in range(6)]
    units += [("S1", "b", float(12 + rng.normal(0, 0.3)), "forced") for _ in range(4)]
    build(plant, units)
    report = tenant.get(RESULTS).json()
    [metric] = report["metrics"]
    # Then S1 counts in each arm's clusters, once in G (df = 7 − 1)
    assert metric["variants"]["a"]["clusters"] == metric["variants"]["b"]["clusters"] == 4
    assert metric["variants"]["b"]["vs_control"]["df"] == 6
    assert_cluster_inference(report, units)


EVERY_KIND_OF_LOT = [
    ("L1", "a", 1.0, "hash"),
    ("L1", "a", 1.1, "hash"),
    (42, "a", 1.2, "hash"),
    ("42", "a", 1.3, "hash"),
    (42.0, "a", 1.4, "hash"),
    (None, "a", 1.5, "hash"),
    (["x"], "b", 1.6, "hash"),
    ("L2", "b", 1.7, "hash"),
    ("L3", "b", 1.8, "hash"),
]


@pytest.mark.parametrize(
    ("extra", "lots_of_b"),
    [
        ([], 2),  # every unit hashed and measured: the counts read from the report's lot cells
        ([("L4", "b", None, "hash")], 3),  # a unit not measured still counts its lot
        ([("F", "b", 1.9, "forced")], 2),  # a lot only forced units belong to does not
    ],
    ids=["all-measured", "one-unmeasured", "one-forced"],
)
def test_results__srm_counts_each_variants_distinct_hashed_lots(tenant, plant, extra, lots_of_b):
    # Given lots 42, "42" and 42.0 (one lot) and units with no lot (no attribute, a list)
    build(plant, EVERY_KIND_OF_LOT + extra)
    # When
    report = tenant.get(RESULTS).json()
    # Then a: L1 and 42; b: L2, L3 and a lot only an unmeasured unit has
    assert report["srm"]["counts"] == {"a": 2, "b": lots_of_b}
    assert report["units"]["assigned"] == len(EVERY_KIND_OF_LOT) + len(extra)


def test_results__whole_lots_forced_no_effect__p_value_not_tiny(tenant, plant):
    # Given the scenario: no treatment effect, 4 lots per arm of 500 units forced
    # whole onto a variant, lot-to-lot sd 1.0 and unit sd 0.3
    rng = np.random.default_rng(18)
    units = lots_design(rng, [500] * 4, [500] * 4, source="forced")
    build(plant, units)
    # When
    report = tenant.get(RESULTS).json()
    b = report["metrics"][0]["variants"]["b"]["vs_control"]
    # Then the comparison is that of 4 lots against 4: the unit-level Welch test would claim
    # certainty (p < 1e-10) where there is none
    values_a = [v for _, variant, v, _ in units if variant == "a"]
    values_b = [v for _, variant, v, _ in units if variant == "b"]
    assert stats.ttest_ind(values_b, values_a, equal_var=False).pvalue < 1e-10
    assert b["df"] == 7
    assert b["p_value"] > 0.05
    assert b["ci_low"] < 0 < b["ci_high"]
    assert b["design_effect"] > 100
    assert_cluster_inference(report, units)


def test_results__randomized_by_units__welch_and_no_cluster_fields(tenant, plant):
    rng = np.random.default_rng(4)
    build(plant, lots_design(rng, [5, 5], [5, 5]), randomize_by=None)
    report = tenant.get(RESULTS).json()
    assert (report["randomized_by"], report["inference"]) == (None, "welch")
    block = report["metrics"][0]["variants"]["b"]
    assert "clusters" not in block and "icc" not in block["vs_control"]
    assert not math.isnan(block["vs_control"]["t"])


def test_factorial__experiment_randomized_by_lot__answers_with_a_warning_naming_it(tenant, plant):
    rng = np.random.default_rng(5)
    build(plant, lots_design(rng, [3, 3], [3, 3]))
    response = tenant.get("/products/widget/analysis/factorial", experiments="etch", metric="y")
    assert response.status_code == 200, response.content
    assert response.json()["anova"] is not None
    assert "etch" in response.json()["warning"]


# The worked example of docs/results.md, "Lots": its figures, as the page prints them.
WORKED_EXAMPLE = {
    "A1": ("a", [10.0, 10.2, 10.1]),
    "A2": ("a", [10.6, 10.8, 10.7]),
    "A3": ("a", [9.8, 9.9, 10.0]),
    "B1": ("b", [10.9, 11.1, 11.0]),
    "B2": ("b", [10.3, 10.4, 10.2]),
    "B3": ("b", [11.2, 11.4, 11.3]),
}


def test_results__docs_worked_example__figures_of_the_page(tenant, plant):
    units = [
        (lot, variant, value, "forced")
        for lot, (variant, values) in WORKED_EXAMPLE.items()
        for value in values
    ]
    build(plant, units)
    b = tenant.get(RESULTS).json()["metrics"][0]["variants"]["b"]
    shown = {
        key: round(b["vs_control"][key], 3)
        for key in ("diff", "t", "df", "p_value", "ci_low", "ci_high", "icc", "design_effect")
    }
    assert shown == {
        "diff": 0.633,
        "t": 1.801,
        "df": 5.0,
        "p_value": 0.132,
        "ci_low": -0.271,
        "ci_high": 1.538,
        "icc": 0.956,
        "design_effect": 2.911,
    }
    # Units taken as independent, Welch's test would have said t = 3.25, p = 0.0053
    values = {v: [x for _, variant, x, _ in units if variant == v] for v in "ab"}
    welch = stats.ttest_ind(values["b"], values["a"], equal_var=False)
    assert (round(welch.statistic, 2), round(welch.pvalue, 4)) == (3.25, 0.0053)
    assert_cluster_inference(tenant.get(RESULTS).json(), units)
