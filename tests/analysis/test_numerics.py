"""The numerical standard (docs/results.md §9): every statistic exact to what doubles allow on
the stored values, whatever their offset or scale, on SQLite and PostgreSQL.

References: the NIST StRD univariate and one-way ANOVA datasets with their certified values
(tests/data/nist/), and exact rational arithmetic (``fractions``) on the stored doubles.
A certified value is for the decimal data; a double stores the nearest binary value, so where
the data are not exactly representable (NumAcc2-4, SmLs04-09, AtmWtAg...) the attainable
agreement with the certified value is that of the exact statistics of the stored doubles, which
each test computes and allows for.
"""

import itertools
import math
import random
from fractions import Fraction

import pytest
from django.db import connection

from tests.analysis.builders import exact_mean_and_std, read_nist, relative_error

RESULTS = "/products/widget/experiments/nist/results"
FACTORIAL = "/products/widget/analysis/factorial"
UNIVARIATE = ["Lew", "Lottery", "Mavro", "Michelso", "NumAcc1", "NumAcc2", "NumAcc3", "NumAcc4"]
ANOVA = ["SiRstv", "AtmWtAg"] + [f"SmLs{i:02d}" for i in range(1, 10)]
# The worst relative error against the exact statistics of the stored doubles that a test
# accepts: a few units of 2^-53 (1.1e-16) — the mean and std are correctly rounded or nearly.
EXACT = 1e-15


def variant_block(report, metric="y", variant="a"):
    [block] = [m for m in report["metrics"] if m["metric"] == metric]
    return block["variants"][variant]


@pytest.mark.parametrize("name", UNIVARIATE)
def test_results__nist_univariate__mean_and_std_to_the_digits_doubles_allow(tenant, plant, name):
    # Given a NIST StRD univariate dataset on one variant
    certified, rows = read_nist(name)
    values = [float(row[0]) for row in rows]
    plant.experiment("nist", ["a"])
    plant.metric("y")
    plant.group("nist", "a", "y", values)
    # When
    block = variant_block(tenant.get(RESULTS).json())
    # Then mean and std agree with the exact statistics of the stored doubles
    exact_mean, exact_std = exact_mean_and_std(values)
    assert block["n"] == len(values)
    assert relative_error(block["mean"], exact_mean) <= EXACT
    assert relative_error(block["std"], exact_std) <= EXACT
    # And with NIST's certified values, as closely as the stored doubles allow
    for key, actual, exact in (
        ("mean", block["mean"], exact_mean),
        ("std", block["std"], exact_std),
    ):
        attainable = relative_error(float(exact), Fraction(certified[key]))
        assert relative_error(actual, Fraction(certified[key])) <= attainable + 1e-13, key


def one_way(plant, name):
    certified, rows = read_nist(name)
    treatments = sorted({row[0] for row in rows}, key=int)
    plant.experiment("nist", [f"t{t}" for t in treatments])
    plant.metric("y")
    by_treatment = {t: [float(row[1]) for row in rows if row[0] == t] for t in treatments}
    for treatment, values in by_treatment.items():
        plant.group("nist", f"t{treatment}", "y", values)
    return certified, list(by_treatment.values())


def exact_one_way(groups):
    """Between and within sums of squares of the stored doubles, exactly."""
    exact = [[Fraction(v) for v in group] for group in groups]
    total_n = sum(len(g) for g in exact)
    grand = sum(sum(g) for g in exact) / total_n
    means = [sum(g) / len(g) for g in exact]
    between = sum(len(g) * (m - grand) ** 2 for g, m in zip(exact, means, strict=True))
    within = sum(sum((x - m) ** 2 for x in g) for g, m in zip(exact, means, strict=True))
    return between, within


@pytest.mark.parametrize("name", ANOVA)
def test_factorial__nist_one_way_anova__table_to_the_digits_doubles_allow(tenant, plant, name):
    # Given a NIST StRD one-way ANOVA dataset: one experiment, one variant per treatment
    certified, groups = one_way(plant, name)
    # When
    response = tenant.get(FACTORIAL, experiments="nist", metric="y")
    # Then
    assert response.status_code == 200, response.content
    report = response.json()
    effect, residual, total = report["anova"]
    assert (effect["source"], residual["source"], total["source"]) == ("nist", "residual", "total")
    assert effect["df"] == int(certified["between_df"])
    assert residual["df"] == int(certified["within_df"])
    between, within = exact_one_way(groups)
    exact_f = (between / effect["df"]) / (within / residual["df"])
    exact_r2 = between / (between + within)
    for key, actual, exact in (
        ("between_ss", effect["sum_sq"], between),
        ("within_ss", residual["sum_sq"], within),
        ("f", effect["f"], exact_f),
        ("r_squared", report["r_squared"], exact_r2),
    ):
        # Exact on the stored doubles to a few units of the last digit...
        assert relative_error(actual, exact) <= EXACT, key
        # ... and as close to NIST's certified value as the stored doubles allow
        attainable = relative_error(float(exact), Fraction(certified[key]))
        assert relative_error(actual, Fraction(certified[key])) <= attainable + 1e-13, key
    exact_std = math.sqrt(within / residual["df"])
    assert report["residual_std"] == pytest.approx(exact_std, rel=1e-13)


# --- the cases of the issue, each against its exact value ------------------------------------


def test_results__constant_data__std_exactly_zero_and_no_test(tenant, plant):
    # Given ten readings all 0.1 on a and five on b (a gauge at its resolution)
    plant.experiment("nist", ["a", "b"])
    plant.metric("y", lower_limit=0.0, upper_limit=0.2)
    plant.group("nist", "a", "y", [0.1] * 10)
    plant.group("nist", "b", "y", [0.1] * 5)
    # When
    report = tenant.get(RESULTS).json()
    a, b = variant_block(report), variant_block(report, variant="b")
    # Then std is exactly 0, Cp/Cpk are null, and there is no "significant" difference
    assert (a["std"], b["std"]) == (0.0, 0.0)
    assert (a["mean"], a["cp"], a["cpk"]) == (0.1, None, None)
    for key in ("diff", "t", "p_value", "p_value_adjusted"):
        assert b["vs_control"][key] is None, key


def test_results__offset_1e9__difference_of_means_and_t_exact(tenant, plant):
    # Given values near 1e9 (a frequency in Hz) with a spread of 1e-3
    control = [1e9 + d for d in (0.0011, -0.0007, 0.0004, -0.0013, 0.0009, 0.0002, -0.0006)]
    treatment = [1e9 + d for d in (0.0031, 0.0012, 0.0027, 0.0019, 0.0035, 0.0008)]
    plant.experiment("nist", ["a", "b"])
    plant.metric("y")
    plant.group("nist", "a", "y", control)
    plant.group("nist", "b", "y", treatment)
    # When
    report = tenant.get(RESULTS).json()
    a, b = variant_block(report), variant_block(report, variant="b")
    # Then: exact rational references on the stored doubles
    mean_c, std_c = exact_mean_and_std(control)
    mean_t, std_t = exact_mean_and_std(treatment)
    assert relative_error(a["std"], std_c) <= EXACT
    assert relative_error(b["std"], std_t) <= EXACT
    diff = mean_t - mean_c
    assert relative_error(b["vs_control"]["diff"], diff) <= 1e-14
    se = math.sqrt(std_c**2 / len(control) + std_t**2 / len(treatment))
    assert relative_error(b["vs_control"]["t"], diff / Fraction(se)) <= 1e-13


@pytest.mark.parametrize("scale", [1e-155, 1e-300, 1e155, 1e300])
def test_results__extreme_scales__every_statistic_finite_and_exact(tenant, plant, scale):
    # Given ordinary data multiplied by a tiny or huge scale: squares under/overflow
    values = [v * scale for v in (1.0, 2.0, 4.0, 3.5, 2.5)]
    plant.experiment("nist", ["a"])
    plant.metric("y", lower_limit=0.0, upper_limit=6.0 * scale)
    plant.group("nist", "a", "y", values)
    block = variant_block(tenant.get(RESULTS).json())
    mean, std = exact_mean_and_std(values)
    assert relative_error(block["mean"], mean) <= EXACT
    assert relative_error(block["std"], std) <= EXACT
    assert block["cp"] == pytest.approx(6.0 * scale / (6 * std), rel=1e-14)


def test_results__limits_at_the_double_range__cp_finite(tenant, plant):
    plant.experiment("nist", ["a"])
    plant.metric("y", lower_limit=-1.7e308, upper_limit=1.7e308)
    plant.group("nist", "a", "y", [1.0, 2.0, 3.0])
    block = variant_block(tenant.get(RESULTS).json())
    assert block["cp"] == pytest.approx(1.7e308 / 3, rel=1e-15)  # (U − L)/(6·1)
    assert block["yield"] == 1.0


def test_results__values_at_the_double_range__mean_and_std_finite(tenant, plant):
    values = [1.7e308, 1.2e308, -1.5e308, 1.69e308]
    plant.experiment("nist", ["a", "b"])
    plant.metric("y")
    plant.group("nist", "a", "y", values)
    # A spread beyond the largest double is null, never an error
    plant.group("nist", "b", "y", [1.7e308, -1.7e308, 1.7e308])
    report = tenant.get(RESULTS).json()
    block = variant_block(report)
    mean, std = exact_mean_and_std(values)
    assert relative_error(block["mean"], mean) <= EXACT
    assert relative_error(block["std"], std) <= EXACT
    beyond = variant_block(report, variant="b")
    assert beyond["mean"] == pytest.approx(1.7e308 / 3, rel=1e-15)
    assert beyond["std"] is None


def test_results__mixed_magnitudes__mean_exact(tenant, plant):
    # Given [1e16, 1, -1e16, 1]: a running sum gives 0.25
    plant.experiment("nist", ["a"])
    plant.metric("y")
    plant.group("nist", "a", "y", [1e16, 1.0, -1e16, 1.0])
    block = variant_block(tenant.get(RESULTS).json())
    assert block["mean"] == 0.5
    _, std = exact_mean_and_std([1e16, 1.0, -1e16, 1.0])
    assert relative_error(block["std"], std) <= EXACT


def test_results__a_tiny_value_among_ordinary_ones__no_underflow_error(tenant, plant):
    # Given 1e-200 between -1 and 1: its square underflows (PostgreSQL refuses that)
    values = [-1.0, 1e-200, 1.0, 0.5]
    plant.experiment("nist", ["a"])
    plant.metric("y")
    plant.group("nist", "a", "y", values)
    response = tenant.get(RESULTS)
    assert response.status_code == 200, response.content
    mean, std = exact_mean_and_std(values)
    block = variant_block(response.json())
    assert relative_error(block["mean"], mean) <= EXACT
    assert relative_error(block["std"], std) <= EXACT


# --- exact spreads on skewed and offset data ---------------------------------------------------


def exact_cpk(values, lower, upper):
    """Cpk of the stored doubles, exactly: min(U − mean, mean − L)/(3·std)."""
    mean, std = exact_mean_and_std(values)
    sides = [Fraction(upper) - mean, mean - Fraction(lower)]
    return min(sides) / (3 * Fraction(std))


def test_results__limits_ulps_from_the_mean__cpk_uses_the_exact_mean(tenant, plant):
    # Given two values one ulp apart near 1e9, limits two ulps either side: the mean is not a
    # double (it falls halfway), so rounding it first moves it a quarter of the spec width
    lower, upper = 999999999.9999998, 1000000000.0000002
    values = [1e9, 1000000000.0000001]
    plant.experiment("nist", ["a"])
    plant.metric("y", lower_limit=lower, upper_limit=upper)
    plant.group("nist", "a", "y", values)
    # When
    block = variant_block(tenant.get(RESULTS).json())
    # Then Cpk is that of the exact mean (0.70711), not Cp (0.94281)
    assert block["cpk"] == pytest.approx(0.70711, abs=5e-6)
    assert relative_error(block["cpk"], exact_cpk(values, lower, upper)) <= EXACT


def test_results__offset_1e9_normal_noise__cpk_exact(tenant, plant):
    # Given 1e9 + N(0, 1e-3), n = 50, limits ±3e-3 around 1e9
    rng = random.Random(18)
    values = [1e9 + rng.gauss(0.0, 1e-3) for _ in range(50)]
    lower, upper = 1e9 - 3e-3, 1e9 + 2e-3
    plant.experiment("nist", ["a"])
    plant.metric("y", lower_limit=lower, upper_limit=upper)
    plant.group("nist", "a", "y", values)
    block = variant_block(tenant.get(RESULTS).json())
    assert relative_error(block["cpk"], exact_cpk(values, lower, upper)) <= EXACT


def lognormal(n, *, seed):
    rng = random.Random(seed)
    return [round(rng.lognormvariate(0.0, 1.5), 6) for _ in range(n)]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([0.1] * 999 + [0.7], id="999x0.1-and-0.7"),
        pytest.param(lognormal(66_700, seed=7), id="66700-lognormal"),
    ],
)
def test_results__skewed_group__std_exact(tenant, plant, values):
    # Given a group whose mean lies far from the middle of its range (most values low, a few
    # far above): a sum of squares about the mid-range cancels most of its digits
    plant.experiment("nist", ["a"])
    plant.metric("y", lower_limit=0.0, upper_limit=50.0)
    plant.group("nist", "a", "y", values)
    # When
    block = variant_block(tenant.get(RESULTS).json())
    # Then mean, std and Cpk are those of the stored doubles
    mean, std = exact_mean_and_std(values)
    assert relative_error(block["mean"], mean) <= EXACT
    assert relative_error(block["std"], std) <= EXACT
    assert relative_error(block["cpk"], exact_cpk(values, 0.0, 50.0)) <= EXACT
    allow_slow_constraint_check()


def allow_slow_constraint_check():
    """The test's deferred foreign-key checks of tens of thousands of rows run as one
    statement when it ends: longer than the service's statement timeout on a busy machine."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 0")


def test_factorial__cell_means_far_apart__every_sum_of_squares_exact(tenant, plant):
    # Given y = 1 + 1e6·A + 1e-4·B + noise on an unbalanced 2×2 design: the cell means differ
    # by a factor of 1e6, the interaction is at the level of the noise
    rng = random.Random(3)
    plant.experiment("etch", ["a0", "a1"])
    plant.experiment("anneal", ["b0", "b1"])
    plant.metric("y")
    cells = {}
    for (a, b), n in zip(itertools.product((0, 1), (0, 1)), (5, 7, 6, 9), strict=True):
        values = [1.0 + 1e6 * a + 1e-4 * b + rng.gauss(0.0, 1e-6) for _ in range(n)]
        plant.units([{"etch": f"a{a}", "anneal": f"b{b}"}] * n, {"y": values})
        cells[(a, b)] = [Fraction(v) for v in values]
    # When
    response = tenant.get(FACTORIAL, experiments="etch,anneal", metric="y")
    assert response.status_code == 200, response.content
    rows = {row["source"]: row for row in response.json()["anova"]}
    # Then each Type III sum of squares equals the exact one of the stored doubles: for a 2×2
    # with effect coding, SS = (Σ c·mean)² / Σ c²/n over the cells, c = ±1
    means = {cell: sum(v) / len(v) for cell, v in cells.items()}
    contrasts = {
        "etch": {(0, 0): 1, (0, 1): 1, (1, 0): -1, (1, 1): -1},
        "anneal": {(0, 0): 1, (0, 1): -1, (1, 0): 1, (1, 1): -1},
        "etch:anneal": {(0, 0): 1, (0, 1): -1, (1, 0): -1, (1, 1): 1},
    }
    for source, c in contrasts.items():
        estimate = sum(c[cell] * means[cell] for cell in cells)
        exact = estimate**2 / sum(Fraction(1, len(cells[cell])) for cell in cells)
        assert relative_error(rows[source]["sum_sq"], exact) <= EXACT, source
    within = sum(sum((x - means[cell]) ** 2 for x in v) for cell, v in cells.items())
    assert relative_error(rows["residual"]["sum_sq"], within) <= EXACT
