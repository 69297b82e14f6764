"""lab.analysis.statistics against published worked examples, and its undefined cases.

Each expected value names its source next to it. Where a source prints a rounded figure, the
tolerance is half a unit of its last printed digit.

Why this module is long: it checks one module, one published example after another, each
with its source beside it.
"""

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from lab.analysis.statistics import (
    Summary,
    adjust_p_values,
    capability_intervals,
    describe,
    srm,
    two_proportion,
    vs_control,
    welch,
)

# --- helpers -------------------------------------------------------------------------------


def summary_of(values, lower=None, upper=None):
    """What the database aggregates would return for these values."""
    n = len(values)
    in_spec = None
    if lower is not None or upper is not None:
        in_spec = sum(
            1 for v in values if (lower is None or lower <= v) and (upper is None or v <= upper)
        )
    return Summary(
        n=n,
        mean=statistics.fmean(values) if n else None,
        std=statistics.stdev(values) if n >= 2 else None,
        min=min(values) if n else None,
        max=max(values) if n else None,
        in_spec=in_spec,
    )


def summary_from_sd(n, mean, sd):
    return Summary(n=n, mean=mean, std=sd, min=None, max=None, in_spec=None)


def assert_plain(result):
    """Every statistic is a plain float or int or None: no NaN, no infinity, no numpy type."""
    for key, value in result.items():
        if isinstance(value, dict):
            assert_plain(value)
            continue
        assert value is None or type(value) in (float, int), (key, type(value))
        if type(value) is float:
            assert math.isfinite(value), (key, value)


def chi2_sf_3df(x):
    """Upper tail of chi-square with 3 df in closed form, independent of scipy."""
    return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)


# --- Welch's t-test --------------------------------------------------------------------------

# R documentation of t.test, example `t.test(extra ~ group, data = sleep)` (Welch Two Sample
# t-test; the sleep data of Student (1908), R's datasets::sleep).
SLEEP_GROUP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_GROUP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch__r_sleep_example__matches_r_output():
    # Given R's two-sample example, where the difference is group 1 − group 2
    control, treatment = summary_of(SLEEP_GROUP_2), summary_of(SLEEP_GROUP_1)

    # When
    result = welch(control, treatment)

    # Then: R prints "t = -1.8608, df = 17.776, p-value = 0.07939",
    # "95 percent confidence interval: -3.3654832  0.2054832",
    # "mean in group 1 0.75, mean in group 2 2.33"
    assert result["diff"] == pytest.approx(0.75 - 2.33, abs=5e-12)
    assert result["t"] == pytest.approx(-1.8608, abs=5e-5)
    assert result["df"] == pytest.approx(17.776, abs=5e-4)
    assert result["p_value"] == pytest.approx(0.07939, abs=5e-6)
    assert result["ci_low"] == pytest.approx(-3.3654832, abs=5e-8)
    assert result["ci_high"] == pytest.approx(0.2054832, abs=5e-8)
    assert_plain(result)


def test_welch__nist_auto83b_example__matches_handbook():
    # Given NIST/SEMATECH e-Handbook of Statistical Methods §1.3.5.3 "Two-Sample t-Test for
    # Equal Means" (eda353.htm), AUTO83B.DAT miles per gallon: sample 1 US cars N1 = 249,
    # mean 20.14458, sd 6.41470; sample 2 Japanese cars N2 = 79, mean 30.48101, sd 6.10771.
    # The handbook's statistic is sample 1 − sample 2, so sample 1 plays the treatment.
    japanese = summary_from_sd(79, 30.48101, 6.10771)
    us = summary_from_sd(249, 20.14458, 6.41470)

    # When
    result = welch(japanese, us)

    # Then: unequal variances, T = -12.94627 with 136.8750 degrees of freedom (handbook);
    # two-sided probability 1.571e-025 (Boost.Math example students_t_two_samples.cpp, which
    # reproduces this handbook case from the same summary figures).
    assert result["t"] == pytest.approx(-12.94627, abs=5e-6)
    assert result["df"] == pytest.approx(136.8750, abs=5e-4)
    assert result["p_value"] == pytest.approx(1.571e-25, rel=5e-4)
    assert result["diff"] == pytest.approx(20.14458 - 30.48101, abs=1e-12)
    assert result["ci_low"] < result["diff"] < result["ci_high"] < 0
    assert_plain(result)


# scipy warns about precision on nearly identical raw samples; the comparison still holds.
@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
@given(
    st.lists(st.integers(-1000, 1000), min_size=2, max_size=30),
    st.lists(st.integers(-1000, 1000), min_size=2, max_size=30),
)
def test_welch__from_aggregates__equals_test_on_raw_values(control_values, treatment_values):
    # Given two samples with some spread, reduced to what the database returns
    control_values = [v / 10 for v in control_values]
    treatment_values = [v / 10 for v in treatment_values]
    if statistics.variance(control_values) == 0 and statistics.variance(treatment_values) == 0:
        return

    # When
    result = welch(summary_of(control_values), summary_of(treatment_values))

    # Then it agrees with the test on the raw values
    raw = scipy_stats.ttest_ind(treatment_values, control_values, equal_var=False)
    interval = raw.confidence_interval(0.95)
    assert result["t"] == pytest.approx(float(raw.statistic), rel=1e-6, abs=1e-9)
    assert result["p_value"] == pytest.approx(float(raw.pvalue), rel=1e-6, abs=1e-12)
    assert result["df"] == pytest.approx(float(raw.df), rel=1e-6)
    assert result["ci_low"] == pytest.approx(float(interval.low), rel=1e-6, abs=1e-9)
    assert result["ci_high"] == pytest.approx(float(interval.high), rel=1e-6, abs=1e-9)


def test_welch__swapped_sides__mirrors_result():
    a, b = summary_of(SLEEP_GROUP_1), summary_of(SLEEP_GROUP_2)
    forward, backward = welch(a, b), welch(b, a)
    assert forward["diff"] == pytest.approx(-backward["diff"])
    assert forward["t"] == pytest.approx(-backward["t"])
    assert forward["df"] == pytest.approx(backward["df"])
    assert forward["p_value"] == pytest.approx(backward["p_value"])
    assert forward["ci_low"] == pytest.approx(-backward["ci_high"])


def test_welch__other_confidence__widens_interval():
    a, b = summary_of(SLEEP_GROUP_2), summary_of(SLEEP_GROUP_1)
    at_95, at_99 = welch(a, b), welch(a, b, confidence=0.99)
    assert at_99["ci_low"] < at_95["ci_low"] < at_95["ci_high"] < at_99["ci_high"]


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        pytest.param(summary_of([1.0]), summary_of([1.0, 2.0, 3.0]), id="control-n1"),
        pytest.param(summary_of([1.0, 2.0]), summary_of([5.0]), id="treatment-n1"),
        pytest.param(Summary(n=0), summary_of([1.0, 2.0]), id="control-empty"),
        pytest.param(summary_of([2.0, 2.0, 2.0]), summary_of([3.0, 3.0]), id="both-zero-variance"),
    ],
)
def test_welch__undefined__every_value_is_none(control, treatment):
    assert welch(control, treatment) == dict.fromkeys(
        ("diff", "t", "df", "p_value", "ci_low", "ci_high")
    )


def test_welch__one_side_without_spread__uses_other_sides_df():
    # Given a control with no spread: the Welch–Satterthwaite df reduces to n_t − 1
    control = summary_of([5.0, 5.0, 5.0, 5.0])
    treatment = summary_of([4.0, 6.0, 7.0, 5.5, 6.5])

    result = welch(control, treatment)

    assert result["df"] == pytest.approx(4.0)
    assert result["t"] == pytest.approx(
        (treatment.mean - 5.0) / (treatment.std / math.sqrt(treatment.n))
    )


def test_summary__negative_std__is_refused():
    with pytest.raises(ValueError):
        Summary(n=3, mean=1.0, std=-1e-18)


def test_welch__confidence_outside_unit_interval__is_refused():
    with pytest.raises(ValueError):
        welch(summary_of([1.0, 2.0]), summary_of([1.0, 3.0]), confidence=1.0)


# --- describe: yield and process capability --------------------------------------------------


def test_describe__nist_capability_example__cp_and_cpk():
    # Given NIST/SEMATECH e-Handbook §6.1.6 "What is Process Capability?" (pmc16.htm):
    # USL = 20, LSL = 8, process mean 16, process standard deviation 2
    summary = Summary(n=50, mean=16.0, std=2.0, min=11.0, max=21.0, in_spec=49)

    # When
    result = describe(summary, lower=8.0, upper=20.0)

    # Then: Cp = (20 − 8)/(6·2) = 1.0; Cpk = min(0.6667, 1.3333) = 0.6667 (handbook)
    assert result["cp"] == pytest.approx(1.0)
    assert result["cpk"] == pytest.approx(0.6667, abs=5e-5)
    assert result["std"] == pytest.approx(2.0)
    assert result["yield"] == pytest.approx(49 / 50)
    assert_plain(result)


def test_describe__upper_limit_only__one_sided_cpk_and_no_cp():
    # Given the handbook's process with only its USL. One-sided Cpk is (USL − mean)/(3σ):
    # SAS/QC "The SHEWHART Procedure", The Index Cpk ("If you specify only USL ...");
    # handbook §6.1.6 gives Cpu = (20 − 16)/(3·2) = 0.6667
    summary = Summary(n=50, mean=16.0, std=2.0, min=11.0, max=21.0, in_spec=49)

    result = describe(summary, lower=None, upper=20.0)

    assert result["cp"] is None
    assert result["cpk"] == pytest.approx(0.6667, abs=5e-5)
    assert result["yield"] == pytest.approx(49 / 50)


def test_describe__lower_limit_only__one_sided_cpk_and_no_cp():
    # Given the handbook's process with only its LSL: Cpl = (16 − 8)/(3·2) = 1.3333
    # (handbook §6.1.6; one-sided form as in SAS/QC "The Index Cpk")
    summary = Summary(n=50, mean=16.0, std=2.0, min=11.0, max=21.0, in_spec=50)

    result = describe(summary, lower=8.0, upper=None)

    assert result["cp"] is None
    assert result["cpk"] == pytest.approx(1.3333, abs=5e-5)


def test_describe__from_values__sample_std_min_max_and_closed_limits():
    # Given values where two sit exactly on the limits (closed interval: both count)
    values = [0.9, 0.95, 1.0, 1.05, 1.1, 1.2]

    result = describe(summary_of(values, lower=0.9, upper=1.1), lower=0.9, upper=1.1)

    assert result["n"] == 6
    assert result["mean"] == pytest.approx(statistics.fmean(values))
    assert result["std"] == pytest.approx(statistics.stdev(values))  # n − 1 denominator
    assert (result["min"], result["max"]) == (0.9, 1.2)
    assert result["yield"] == pytest.approx(5 / 6)


def test_describe__no_limits__yield_cp_cpk_are_none():
    result = describe(summary_of([1.0, 2.0, 4.0]), lower=None, upper=None)
    assert (result["yield"], result["cp"], result["cpk"]) == (None, None, None)
    assert result["std"] == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))


def test_describe__single_value__no_std_no_capability_but_yield():
    result = describe(summary_of([1.0], lower=0.0, upper=2.0), lower=0.0, upper=2.0)
    assert result["n"] == 1
    assert result["mean"] == 1.0
    assert (result["std"], result["cp"], result["cpk"]) == (None, None, None)
    assert result["yield"] == 1.0


def test_describe__no_values__everything_but_n_is_none():
    result = describe(Summary(n=0, in_spec=0), lower=0.0, upper=1.0)
    assert result == {
        "n": 0,
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "yield": None,
        "cp": None,
        "cpk": None,
        "cp_ci_low": None,
        "cp_ci_high": None,
        "cpk_ci_low": None,
        "cpk_ci_high": None,
    }


def test_describe__zero_variance__std_zero_and_no_capability():
    result = describe(summary_of([3.0, 3.0, 3.0], lower=0.0, upper=5.0), lower=0.0, upper=5.0)
    assert result["std"] == 0.0
    assert (result["cp"], result["cpk"]) == (None, None)
    assert result["yield"] == 1.0


def test_summary__in_spec_beyond_n__is_refused():
    with pytest.raises(ValueError):
        Summary(n=2, mean=1.0, std=0.0, in_spec=3)


# --- two-proportion comparison ---------------------------------------------------------------


def test_two_proportion__aspirin_example__matches_agresti():
    # Given the Physicians' Health Study table in Agresti, "An Introduction to Categorical
    # Data Analysis" (2nd ed., §2.2): myocardial infarction in 189 of 11,034 on placebo
    # (control) and 104 of 11,037 on aspirin (treatment).
    result = two_proportion(11034, 189, 11037, 104)

    # Then: Agresti gives p1 − p2 = 0.0171 − 0.0094 = 0.0077 with the Wald 95% interval
    # (0.005, 0.011); here the difference is aspirin − placebo, so the signs flip.
    assert result["yield_diff"] == pytest.approx(-0.0077, abs=5e-5)
    assert result["yield_ci_low"] == pytest.approx(-0.011, abs=5e-4)
    assert result["yield_ci_high"] == pytest.approx(-0.005, abs=5e-4)

    # And the pooled z-test agrees with an independent closed form: z² equals Pearson's X²
    # of the 2×2 table without continuity correction, N(ad − bc)² / (r1·r2·c1·c2), and the
    # two-sided normal tail is erfc(|z|/√2).
    a, b, c, d = 189, 11034 - 189, 104, 11037 - 104
    n = a + b + c + d
    x2 = n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    assert result["yield_p_value"] == pytest.approx(math.erfc(math.sqrt(x2 / 2)), rel=1e-9)
    assert_plain(result)


def test_two_proportion__small_counts__match_hand_computation():
    # Given 45/50 in spec on control and 30/50 on treatment, computed by hand:
    # pooled p = 75/100; SE = sqrt(0.75·0.25·(2/50)) = sqrt(0.0075); z = −0.3/SE
    result = two_proportion(50, 45, 50, 30)

    z = -0.3 / math.sqrt(0.0075)
    wald_se = math.sqrt(0.9 * 0.1 / 50 + 0.6 * 0.4 / 50)
    z_975 = 1.959963984540054  # standard normal 97.5% quantile
    assert result["yield_diff"] == pytest.approx(-0.3)
    assert result["yield_p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result["yield_ci_low"] == pytest.approx(-0.3 - z_975 * wald_se, rel=1e-9)
    assert result["yield_ci_high"] == pytest.approx(-0.3 + z_975 * wald_se, rel=1e-9)


def test_two_proportion__empty_side__every_value_is_none():
    assert two_proportion(0, 0, 10, 5) == dict.fromkeys(
        ("yield_diff", "yield_ci_low", "yield_ci_high", "yield_p_value")
    )


@pytest.mark.parametrize(("k_control", "k_treatment"), [(20, 30), (0, 0)])
def test_two_proportion__all_or_none_in_spec__diff_only(k_control, k_treatment):
    # Given every unit in spec on both sides (or none): the pooled proportion is 1 (or 0)
    result = two_proportion(20, k_control, 30, k_treatment)

    # Then the difference is 0, but neither the z-test nor the Wald interval exists
    assert result == {
        "yield_diff": 0.0,
        "yield_ci_low": None,
        "yield_ci_high": None,
        "yield_p_value": None,
    }


def test_two_proportion__opposite_certainties__p_value_without_interval():
    # Given 0/10 against 10/10: the pooled test is defined, the Wald interval would be a point
    result = two_proportion(10, 0, 10, 10)
    assert result["yield_diff"] == 1.0
    assert result["yield_p_value"] == pytest.approx(math.erfc(math.sqrt(20) / math.sqrt(2)))
    assert (result["yield_ci_low"], result["yield_ci_high"]) == (None, None)


def test_two_proportion__count_beyond_n__is_refused():
    with pytest.raises(ValueError):
        two_proportion(10, 11, 10, 5)


# --- vs_control ------------------------------------------------------------------------------


def test_vs_control__with_limits__merges_means_and_yields():
    control = summary_of(SLEEP_GROUP_2, lower=0.0, upper=5.0)
    treatment = summary_of(SLEEP_GROUP_1, lower=0.0, upper=5.0)

    block = vs_control(control, treatment, has_limits=True)

    assert block["t"] == pytest.approx(-1.8608, abs=5e-5)
    assert block["yield_diff"] == pytest.approx(treatment.in_spec / 10 - control.in_spec / 10)
    assert set(block) == {
        "diff",
        "t",
        "df",
        "p_value",
        "ci_low",
        "ci_high",
        "yield_diff",
        "yield_ci_low",
        "yield_ci_high",
        "yield_p_value",
    }


def test_vs_control__without_limits__yield_keys_are_none():
    block = vs_control(summary_of(SLEEP_GROUP_2), summary_of(SLEEP_GROUP_1), has_limits=False)
    assert block["diff"] == pytest.approx(-1.58)
    assert [block[k] for k in ("yield_diff", "yield_ci_low", "yield_ci_high")] == [None] * 3
    assert block["yield_p_value"] is None


# --- sample ratio mismatch -------------------------------------------------------------------


def test_srm__mendel_dihybrid_cross__matches_textbook():
    # Given Mendel's F2 peas, 315 round-yellow, 108 round-green, 101 wrinkled-yellow,
    # 32 wrinkled-green, against 9:3:3:1 (worked in P. McClean, NDSU PLSC 431,
    # "The Chi-Square Test": chi-square = 0.47, df = 3, probability > 0.90)
    counts = {"ry": 315, "rg": 108, "wy": 101, "wg": 32}
    weights = {"ry": 9, "rg": 3, "wy": 3, "wg": 1}

    result = srm(counts, weights)

    assert result["chi2"] == pytest.approx(0.47, abs=5e-3)
    assert result["df"] == 3
    assert result["p_value"] > 0.90
    # the exact tail, from the closed form of the 3-df chi-square (0.9254)
    assert result["p_value"] == pytest.approx(chi2_sf_3df(result["chi2"]), rel=1e-9)
    assert result["p_value"] == pytest.approx(0.9254, abs=5e-5)
    assert result["expected"] == {"ry": 312.75, "rg": 104.25, "wy": 104.25, "wg": 34.75}
    assert result["counts"] == counts
    assert_plain(result)


def test_srm__fair_die__matches_hand_computation():
    # Given 60 rolls of a die: chi2 = Σ(o − 10)²/10 = (4 + 1 + 9 + 0 + 4 + 4)/10 = 2.2, df 5
    counts = dict(zip("123456", [8, 9, 13, 10, 12, 8], strict=True))

    result = srm(counts, dict.fromkeys("123456", 1.0))

    assert result["chi2"] == pytest.approx(2.2)
    assert result["df"] == 5
    assert result["p_value"] == pytest.approx(float(scipy_stats.chi2.sf(2.2, 5)))


def test_srm__no_units__no_test():
    result = srm({}, {"a": 1.0, "b": 1.0})
    assert (result["chi2"], result["df"], result["p_value"]) == (None, None, None)
    assert result["counts"] == {"a": 0, "b": 0}
    assert result["expected"] == {"a": 0.0, "b": 0.0}


def test_srm__single_variant__no_test():
    result = srm({"a": 10}, {"a": 1.0})
    assert (result["chi2"], result["df"], result["p_value"]) == (None, None, None)
    assert result["expected"] == {"a": 10.0}


def test_srm__zero_weight_variant_without_units__left_out_of_test():
    result = srm({"a": 50, "b": 50, "c": 0}, {"a": 1.0, "b": 1.0, "c": 0.0})
    assert result["df"] == 1
    assert result["chi2"] == 0.0
    assert result["p_value"] == pytest.approx(1.0)
    assert result["expected"] == {"a": 50.0, "b": 50.0, "c": 0.0}


def test_srm__zero_weight_variant_with_units__reported_but_not_tested():
    # Given units on a variant whose weight is 0 (forced, or assigned before the change)
    result = srm({"a": 60, "b": 40, "c": 7}, {"a": 3.0, "b": 2.0, "c": 0.0})

    # Then the split among the weighted variants is tested on their own 100 units
    assert result["expected"] == {"a": 60.0, "b": 40.0, "c": 0.0}
    assert result["counts"]["c"] == 7
    assert result["df"] == 1
    assert result["chi2"] == 0.0


def test_srm__clear_mismatch__small_p_value():
    result = srm({"a": 1200, "b": 800}, {"a": 1.0, "b": 1.0})
    assert result["chi2"] == pytest.approx(80.0)
    assert result["p_value"] < 1e-15


@pytest.mark.parametrize(
    ("counts", "weights"),
    [
        pytest.param({"a": 1, "z": 2}, {"a": 1.0}, id="count-without-weight"),
        pytest.param({"a": 1}, {"a": -1.0, "b": 1.0}, id="negative-weight"),
        pytest.param({"a": 1}, {"a": math.nan, "b": 1.0}, id="nan-weight"),
        pytest.param({"a": -1}, {"a": 1.0, "b": 1.0}, id="negative-count"),
    ],
)
def test_srm__invalid_input__is_refused(counts, weights):
    with pytest.raises(ValueError):
        srm(counts, weights)


# --- never NaN, never infinity ---------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
maybe_finite = st.none() | finite
counts_st = st.integers(min_value=0, max_value=10**9)


@st.composite
def summaries(draw):
    n = draw(st.integers(min_value=0, max_value=10**7))
    return Summary(
        n=n,
        mean=draw(maybe_finite),
        std=draw(st.none() | st.floats(min_value=0.0, max_value=1.7e308)),
        min=draw(maybe_finite),
        max=draw(maybe_finite),
        in_spec=draw(st.none() | st.integers(min_value=0, max_value=n)),
    )


@st.composite
def limits(draw):
    lower, upper = draw(maybe_finite), draw(maybe_finite)
    if lower is not None and upper is not None and lower > upper:
        lower, upper = upper, lower
    return lower, upper


@given(summaries(), limits())
def test_describe__any_summary__only_finite_floats_or_none(summary, bounds):
    result = describe(summary, *bounds)
    assert_plain(result)
    if result["yield"] is not None:
        assert 0.0 <= result["yield"] <= 1.0
    if result["std"] is not None:
        assert result["std"] >= 0.0


@given(summaries(), summaries())
def test_welch__any_summaries__only_finite_floats_or_none(control, treatment):
    result = welch(control, treatment)
    assert_plain(result)
    if result["p_value"] is not None:
        assert 0.0 <= result["p_value"] <= 1.0
    if result["ci_low"] is not None and result["ci_high"] is not None:
        assert result["ci_low"] <= result["diff"] <= result["ci_high"]


@given(summaries(), summaries(), st.booleans())
def test_vs_control__any_summaries__only_finite_floats_or_none(control, treatment, has_limits):
    assert_plain(vs_control(control, treatment, has_limits=has_limits))


@given(st.data())
def test_two_proportion__any_counts__only_finite_floats_or_none(data):
    control_n, treatment_n = data.draw(counts_st), data.draw(counts_st)
    control_k = data.draw(st.integers(min_value=0, max_value=control_n))
    treatment_k = data.draw(st.integers(min_value=0, max_value=treatment_n))

    result = two_proportion(control_n, control_k, treatment_n, treatment_k)

    assert_plain(result)
    if result["yield_p_value"] is not None:
        assert 0.0 <= result["yield_p_value"] <= 1.0
    if result["yield_ci_low"] is not None:
        assert result["yield_ci_low"] <= result["yield_diff"] <= result["yield_ci_high"]


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.tuples(counts_st, st.floats(min_value=0.0, max_value=1e6)),
        max_size=8,
    )
)
def test_srm__any_counts_and_weights__only_finite_floats_or_none(variants):
    counts = {key: count for key, (count, _) in variants.items()}
    weights = {key: weight for key, (_, weight) in variants.items()}

    result = srm(counts, weights)

    assert_plain(result)
    assert list(result["expected"]) == list(weights)
    if result["p_value"] is not None:
        assert 0.0 <= result["p_value"] <= 1.0
        tested_total = sum(counts[key] for key in weights if weights[key] > 0)
        assert math.fsum(result["expected"].values()) == pytest.approx(tested_total)


# --- capability intervals --------------------------------------------------------------------


def test_capability_intervals__nist_handbook_example():
    # Given NIST/SEMATECH e-Handbook §6.1.6 (pmc16.htm), "Confidence intervals for indices":
    # n = 50 units, Cp = 1.0 (LSL 8, USL 20, sd 2) and Cpk = 0.6667.
    result = capability_intervals(50, 1.0, 2 / 3)
    # Then Cp lies in Cp·sqrt(χ²/49) with the table quantiles χ²(0.025, 49) = 31.555 and
    # χ²(0.975, 49) = 70.222 (printed to 3 decimals), and Cpk in
    # 0.6667 ∓ 1.96·sqrt(1/450 + 0.4444/98) = (0.5056, 0.8278)
    assert result["cp_ci_low"] == pytest.approx(math.sqrt(31.555 / 49), rel=2e-5)
    assert result["cp_ci_high"] == pytest.approx(math.sqrt(70.222 / 49), rel=2e-5)
    half = scipy_stats.norm.ppf(0.975) * math.sqrt(1 / 450 + (2 / 3) ** 2 / 98)
    assert result["cpk_ci_low"] == pytest.approx(2 / 3 - half, rel=1e-15)
    assert result["cpk_ci_high"] == pytest.approx(2 / 3 + half, rel=1e-15)
    assert result["cpk_ci_low"] == pytest.approx(0.5056, abs=5e-5)


def test_capability_intervals__undefined_index__null_interval():
    assert set(capability_intervals(10, None, None).values()) == {None}
    assert set(capability_intervals(1, 1.0, 1.0).values()) == {None}
    partial = capability_intervals(10, None, 1.2)
    assert (partial["cp_ci_low"], partial["cp_ci_high"]) == (None, None)
    assert partial["cpk_ci_low"] < 1.2 < partial["cpk_ci_high"]


def test_describe__limits_at_the_double_range__cp_finite():
    # Given limits of ±1.7e308: their difference overflows a double, the index does not
    summary = Summary(n=10, mean=0.0, std=1e307, min=-1e307, max=1e307)
    result = describe(summary, lower=-1.7e308, upper=1.7e308)
    assert result["cp"] == pytest.approx(1.7e308 / 3e307, rel=1e-15)
    assert result["cpk"] == pytest.approx(1.7e308 / 3e307, rel=1e-15)


# --- multiple comparisons --------------------------------------------------------------------


def holm_by_hand(p_values):
    """Holm (1979): the i-th smallest of m p-values times (m − i + 1), made monotone."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def bh_by_hand(p_values):
    """Benjamini–Hochberg (1995): p·m/rank, made monotone from the largest down."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    adjusted, running = [0.0] * m, 1.0
    for position, i in enumerate(order):
        rank = m - position
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted


P_VALUES = [0.01, 0.04, 0.03, 0.005, 0.20]


def test_adjust_p_values__holm_bh_bonferroni_none__match_their_definitions():
    with_gap = [*P_VALUES[:2], None, *P_VALUES[2:]]
    for correction, expected in (
        ("holm", holm_by_hand(P_VALUES)),
        ("bh", bh_by_hand(P_VALUES)),
        ("bonferroni", [min(1.0, p * len(P_VALUES)) for p in P_VALUES]),
        ("none", P_VALUES),
    ):
        adjusted = adjust_p_values(with_gap, correction)
        assert adjusted[2] is None
        assert [a for a in adjusted if a is not None] == pytest.approx(expected, rel=1e-15)


def test_adjust_p_values__unknown_correction__is_refused():
    with pytest.raises(ValueError):
        adjust_p_values([0.1], "sidak")


# --- the numerical standard ------------------------------------------------------------------


def test_welch__tiny_and_huge_spreads__same_statistics_as_unit_scale():
    # Given the same samples at scales 1, 1e-160 and 1e160 (exact powers of two would be
    # exact; decimal scales agree to rounding): t, df and p do not depend on the unit
    base_c, base_t = summary_of([1.0, 2.0, 4.0, 3.5]), summary_of([2.0, 3.0, 5.5, 4.0, 6.0])
    reference = welch(base_c, base_t)
    for scale in (2.0**-530, 2.0**530):

        def scaled(s, scale=scale):
            return Summary(n=s.n, mean=s.mean * scale, std=s.std * scale)

        result = welch(scaled(base_c), scaled(base_t))
        for key in ("t", "df", "p_value"):
            assert result[key] == pytest.approx(reference[key], rel=1e-14), key
        assert result["diff"] == pytest.approx(reference["diff"] * scale, rel=1e-14)


def test_welch__double_double_means__difference_keeps_its_digits():
    # Given means 1e9 + 0.0015 and 1e9 + 0.0005 carried as mean + mean_error
    control = Summary(n=10, mean=1e9, std=1e-3, mean_error=0.0005)
    treatment = Summary(n=10, mean=1e9, std=1e-3, mean_error=0.0015)
    assert welch(control, treatment)["diff"] == pytest.approx(0.001, rel=1e-15)
