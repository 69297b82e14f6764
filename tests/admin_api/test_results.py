"""The results report: per-variant statistics of every measured metric against its limits.

Expected figures are computed here from the raw values with `statistics` and `scipy.stats`,
independently of the aggregates the database returns and of lab.analysis.statistics.

Why this module is long: it checks one report, every figure of it against the same
independent computations.
"""

import math
import statistics

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from scipy import stats as scipy_stats

from lab.analysis import results as results_analysis
from lab.models import (
    Assignment,
    AssignmentSource,
    Experiment,
    Measurement,
    Metric,
    Product,
    Status,
    Unit,
    Variant,
)

RESULTS = "/products/widget/experiments/etch/results"

THICKNESS = {
    "a": [1.00, 1.02, 0.98, 1.05, 0.95, 1.12, 0.99, 1.01],
    "b": [1.03, 1.06, 1.01, 1.08, 0.89, 1.04, 1.10, 1.07, 1.05],
    "c": [1.00],
}
RESISTANCE = {  # upper limit only: 55
    "a": [50.1, 52.3, 49.8, 56.0, 51.2, 50.7, 53.3, 50.0],
    "b": [48.2, 47.9, 55.0, 49.1, 48.8, 47.5, 48.0, 49.9, 55.5],
}
COLOUR = {  # no limits
    "a": [3.0, 3.5, 2.5, 3.1, 2.9, 3.3, 3.0, 2.8],
    "b": [3.6, 3.4, 3.9, 3.2, 3.8, 3.5, 3.7, 3.6, 3.4],
}


# --- building the data -------------------------------------------------------------------


class Lab:
    """Writes a product's experiment data straight to the database (the write APIs have
    their own tests); each unit is assigned once and measured once per metric."""

    def __init__(self, product: Product, experiment_key: str = "etch"):
        self.product = product
        self.experiment = Experiment.objects.create(product=product, key=experiment_key)
        self.variants: dict[str, Variant] = {}
        self.metrics: dict[str, Metric] = {}
        self._units = 0

    def variant(self, key: str, **fields) -> Variant:
        self.variants[key] = Variant.objects.create(experiment=self.experiment, key=key, **fields)
        return self.variants[key]

    def metric(self, key: str, **fields) -> Metric:
        self.metrics[key] = Metric.objects.create(product=self.product, key=key, **fields)
        return self.metrics[key]

    def units(self, variant: str, count: int) -> list[Unit]:
        """`count` new units assigned to `variant`, not measured yet."""
        units = Unit.objects.bulk_create(
            Unit(product=self.product, key=f"{self.experiment.key}-SN-{self._units + i}")
            for i in range(count)
        )
        self._units += count
        Assignment.objects.bulk_create(
            Assignment(
                experiment=self.experiment,
                unit=unit,
                variant=self.variants[variant],
                source=AssignmentSource.HASH,
            )
            for unit in units
        )
        return units

    def measure(self, metric: str, values_by_variant: dict[str, list[float]]) -> None:
        """New units per variant, one per value, measured on `metric`."""
        now = timezone.now()
        for variant, values in values_by_variant.items():
            units = self.units(variant, len(values))
            Measurement.objects.bulk_create(
                Measurement(metric=self.metrics[metric], unit=unit, value=value, measured_at=now)
                for unit, value in zip(units, values, strict=True)
            )

    def measure_units(self, metric: str, units: list[Unit], values: list[float]) -> None:
        now = timezone.now()
        Measurement.objects.bulk_create(
            Measurement(metric=self.metrics[metric], unit=unit, value=value, measured_at=now)
            for unit, value in zip(units, values, strict=True)
        )


@pytest.fixture
def lab(product) -> Lab:
    return Lab(Product.objects.get(key="widget", user__username="alice"))


@pytest.fixture
def characterized(lab) -> Lab:
    """Three variants, none marked as control (so the oldest, a, is the control); three
    metrics with both, one and no limits; and data the report must leave out."""
    for key in ("a", "b", "c"):
        lab.variant(key)
    lab.metric("thickness", lower_limit=0.9, nominal=1.0, upper_limit=1.1, unit_of_measure="mm")
    lab.metric("resistance", upper_limit=55.0, unit_of_measure="ohm")
    lab.metric("colour")
    lab.metric("retired", lower_limit=0.0, status=Status.REMOVED)
    lab.metric("unmeasured", lower_limit=0.0)
    lab.measure("thickness", THICKNESS)
    lab.measure("resistance", RESISTANCE)
    lab.measure("colour", COLOUR)
    lab.measure("retired", {"a": [1.0], "b": [2.0]})
    lab.units("b", 5)  # assigned, never measured: they count for the sample ratio only
    # A unit of the product measured but not in this experiment: not in the report.
    other = Lab(lab.product, experiment_key="other")
    other.variant("x")
    other.metrics = lab.metrics
    other.measure("thickness", {"x": [5.0, 6.0]})
    return lab


# --- independent expectations ------------------------------------------------------------


def in_spec(values, lower, upper):
    return sum(1 for v in values if (lower is None or lower <= v) and (upper is None or v <= upper))


def expected_description(values, lower, upper):
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n >= 2 else None
    has_limits = lower is not None or upper is not None
    cp = cpk = None
    if std:
        if lower is not None and upper is not None:
            cp = (upper - lower) / (6 * std)
        sides = [(upper - mean) / (3 * std)] if upper is not None else []
        sides += [(mean - lower) / (3 * std)] if lower is not None else []
        cpk = min(sides) if sides else None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "yield": in_spec(values, lower, upper) / n if has_limits else None,
        "cp": cp,
        "cpk": cpk,
        **expected_intervals(n, cp, cpk),
    }


def expected_intervals(n, cp, cpk):
    """NIST/SEMATECH e-Handbook §6.1.6: chi-square bounds for Cp, Bissell's for Cpk."""
    intervals = dict.fromkeys(["cp_ci_low", "cp_ci_high", "cpk_ci_low", "cpk_ci_high"])
    if cp is not None:
        intervals["cp_ci_low"] = cp * math.sqrt(scipy_stats.chi2.ppf(0.025, n - 1) / (n - 1))
        intervals["cp_ci_high"] = cp * math.sqrt(scipy_stats.chi2.ppf(0.975, n - 1) / (n - 1))
    if cpk is not None:
        half = scipy_stats.norm.ppf(0.975) * math.sqrt(1 / (9 * n) + cpk**2 / (2 * (n - 1)))
        intervals["cpk_ci_low"], intervals["cpk_ci_high"] = cpk - half, cpk + half
    return intervals


def expected_comparison(control, treatment, lower, upper):
    test = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    interval = test.confidence_interval(0.95)
    block = {
        "diff": statistics.fmean(treatment) - statistics.fmean(control),
        "t": float(test.statistic),
        "df": float(test.df),
        "p_value": float(test.pvalue),
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
        "yield_diff": None,
        "yield_ci_low": None,
        "yield_ci_high": None,
        "yield_p_value": None,
    }
    if lower is None and upper is None:
        return block
    k_c, n_c = in_spec(control, lower, upper), len(control)
    k_t, n_t = in_spec(treatment, lower, upper), len(treatment)
    p_c, p_t = k_c / n_c, k_t / n_t
    # Pooled z-test without continuity correction = Pearson chi-square of the 2×2 table.
    table = [[k_t, n_t - k_t], [k_c, n_c - k_c]]
    chi2 = scipy_stats.chi2_contingency(table, correction=False)
    half_width = scipy_stats.norm.ppf(0.975) * math.sqrt(
        p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c
    )
    block.update(
        yield_diff=p_t - p_c,
        yield_p_value=float(chi2.pvalue),
        yield_ci_low=p_t - p_c - half_width,
        yield_ci_high=p_t - p_c + half_width,
    )
    return block


def assert_figures(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for key, value in expected.items():
        if value is None:
            assert actual[key] is None, key
        elif isinstance(value, int):
            assert actual[key] == value, key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def metric_of(report: dict, key: str) -> dict:
    [metric] = [m for m in report["metrics"] if m["metric"] == key]
    return metric


# --- the report ----------------------------------------------------------------------------


def test_results__known_dataset__every_figure_matches_an_independent_computation(
    tenant, characterized
):
    # When
    response = tenant.get(RESULTS)
    # Then
    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["experiment"], report["control"], report["control_reason"]) == (
        "etch",
        "a",
        "oldest",
    )
    # Only measured metrics that are not removed, ordered by key
    assert [m["metric"] for m in report["metrics"]] == ["colour", "resistance", "thickness"]
    cases = [("thickness", THICKNESS, 0.9, 1.1), ("resistance", RESISTANCE, None, 55.0)]
    cases.append(("colour", COLOUR, None, None))
    for key, data, lower, upper in cases:
        metric = metric_of(report, key)
        assert (metric["lower_limit"], metric["upper_limit"]) == (lower, upper)
        # Every variant that is not removed appears, in creation order
        assert list(metric["variants"]) == ["a", "b", "c"]
        control = metric["variants"]["a"]
        assert "vs_control" not in control
        assert_figures(control, expected_description(data["a"], lower, upper))
        treatment = dict(metric["variants"]["b"])
        comparison = treatment.pop("vs_control")
        assert_figures(treatment, expected_description(data["b"], lower, upper))
        comparison.pop("p_value_adjusted"), comparison.pop("yield_p_value_adjusted")
        assert_figures(comparison, expected_comparison(data["a"], data["b"], lower, upper))


def test_results__metric_fields__echo_the_spec(tenant, characterized):
    thickness = metric_of(tenant.get(RESULTS).json(), "thickness")
    assert thickness["plot_url"].startswith("http://testserver/api/admin/v1/plots/")
    assert {k: v for k, v in thickness.items() if k not in ("variants", "plot_url")} == {
        "metric": "thickness",
        "lower_limit": 0.9,
        "nominal": 1.0,
        "upper_limit": 1.1,
        "unit_of_measure": "mm",
    }


def test_results__srm__counts_every_assigned_unit_against_weights(tenant, characterized):
    # Given units per variant: measured ones on three metrics, plus 5 unmeasured on b
    counts = {
        "a": len(THICKNESS["a"]) + len(RESISTANCE["a"]) + len(COLOUR["a"]) + 1,
        "b": len(THICKNESS["b"]) + len(RESISTANCE["b"]) + len(COLOUR["b"]) + 1 + 5,
        "c": len(THICKNESS["c"]),
    }
    total = sum(counts.values())
    # When
    srm = tenant.get(RESULTS).json()["srm"]
    # Then
    expected = scipy_stats.chisquare(list(counts.values()), [total / 3] * 3)
    assert srm["counts"] == counts
    assert srm["expected"] == pytest.approx(dict.fromkeys(counts, total / 3))
    assert srm["chi2"] == pytest.approx(float(expected.statistic))
    assert srm["p_value"] == pytest.approx(float(expected.pvalue))
    assert srm["df"] == 2


def test_results__srm__weights_normalised_and_removed_variants_left_out(tenant, lab):
    # Given a: weight 1, b: weight 3, c removed with units of its own
    lab.variant("a", is_control=True)
    lab.variant("b", weight=3.0)
    lab.variant("c", status=Status.REMOVED)
    lab.units("a", 30)
    lab.units("b", 70)
    lab.units("c", 12)
    # When
    srm = tenant.get(RESULTS).json()["srm"]
    # Then
    expected = scipy_stats.chisquare([30, 70], [25.0, 75.0])
    assert srm["counts"] == {"a": 30, "b": 70}
    assert srm["expected"] == {"a": 25.0, "b": 75.0}
    assert (srm["df"], srm["chi2"]) == (1, pytest.approx(float(expected.statistic)))
    assert srm["p_value"] == pytest.approx(float(expected.pvalue))


def test_results__srm__counts_only_hash_bucketed_units_and_report_says_how_many(tenant, lab):
    # Given a 1:1 experiment with 40 hashed units each, and a lot of 50 forced onto b
    lab.variant("a", is_control=True)
    lab.variant("b")
    lab.metric("thickness")
    lab.units("a", 40)
    hashed_b = lab.units("b", 40)
    forced = lab.units("b", 50)
    Assignment.objects.filter(unit__in=forced).update(source=AssignmentSource.FORCED)
    lab.measure_units("thickness", hashed_b[:10] + forced[:5], [1.0] * 15)
    # When
    report = tenant.get(RESULTS).json()
    # Then the split is judged on the hashed units only, and the report counts all three
    assert report["srm"]["counts"] == {"a": 40, "b": 40}
    assert report["srm"]["p_value"] == pytest.approx(1.0)
    assert report["units"] == {"eligible": 80, "assigned": 130, "measured": 15}


def test_results__units__every_assigned_unit_measured_on_one_metric__all_measured(tenant, lab):
    # Given 6 units all measured on thickness, 2 of them also on width
    lab.variant("a", is_control=True)
    lab.variant("b")
    lab.metric("thickness")
    lab.metric("width")
    units = lab.units("a", 3) + lab.units("b", 3)
    lab.measure_units("thickness", units, [1.0, 1.1, 1.2, 1.0, 1.1, 1.3])
    lab.measure_units("width", units[:2], [5.0, 5.1])
    # When
    report = tenant.get(RESULTS).json()
    # Then
    assert report["units"] == {"eligible": 6, "assigned": 6, "measured": 6}


def test_results__units__no_metric_covers_every_unit__counts_the_union(tenant, lab):
    # Given 7 units: 3 measured on thickness only, 2 on width only, 1 on both, 1 on none
    lab.variant("a", is_control=True)
    lab.variant("b")
    lab.metric("thickness")
    lab.metric("width")
    units = lab.units("a", 4) + lab.units("b", 3)
    lab.measure_units("thickness", units[:4], [1.0, 1.1, 1.2, 1.0])
    lab.measure_units("width", units[3:6], [5.0, 5.1, 5.2])
    # When
    report = tenant.get(RESULTS).json()
    # Then the unit measured on both counts once, the unmeasured one not at all
    assert report["units"] == {"eligible": 7, "assigned": 7, "measured": 6}


def test_results__marked_control__is_the_control_even_when_not_oldest(tenant, lab):
    # Given b marked as control, a older
    lab.variant("a")
    lab.variant("b", is_control=True)
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("thickness", {"a": [1.0, 1.1, 0.9], "b": [1.0, 1.02, 0.98]})
    # When
    report = tenant.get(RESULTS).json()
    # Then
    assert (report["control"], report["control_reason"]) == ("b", "is_control")
    variants = metric_of(report, "thickness")["variants"]
    assert "vs_control" not in variants["b"]
    assert variants["a"]["vs_control"]["diff"] == pytest.approx(0.0, abs=1e-12)


def test_results__marked_control_removed__oldest_live_variant_is_the_control(tenant, lab):
    lab.variant("a", is_control=True, status=Status.REMOVED)
    lab.variant("b")
    lab.variant("c")
    report = tenant.get(RESULTS).json()
    assert (report["control"], report["control_reason"]) == ("b", "oldest")
    assert report["srm"]["counts"] == {"b": 0, "c": 0}


def test_results__removed_variant_with_measurements__shown_and_compared(tenant, lab):
    # Given a removed variant whose units were measured, and one whose units were not
    lab.variant("a")
    lab.variant("b", status=Status.REMOVED)
    lab.variant("gone", status=Status.REMOVED)
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("thickness", {"a": [1.0, 1.1, 0.9], "b": [1.2, 1.3, 1.25]})
    lab.units("gone", 3)
    # When
    variants = metric_of(tenant.get(RESULTS).json(), "thickness")["variants"]
    # Then the removed variant with data is reported, the one without is not
    assert list(variants) == ["a", "b"]
    assert variants["b"]["n"] == 3
    assert variants["b"]["vs_control"]["diff"] == pytest.approx(0.25)


# --- undefined figures are null -----------------------------------------------------------


def test_results__no_measurements__empty_metrics_and_srm_still_reported(tenant, lab):
    lab.variant("a")
    lab.variant("b")
    lab.metric("thickness", lower_limit=0.9)
    lab.units("a", 4)
    report = tenant.get(RESULTS).json()
    assert report["metrics"] == []
    assert report["srm"]["counts"] == {"a": 4, "b": 0}


def test_results__no_variants__control_null_srm_null(tenant, lab):
    report = tenant.get(RESULTS).json()
    assert report == {
        "experiment": "etch",
        "control": None,
        "control_reason": None,
        "correction": "holm",
        "randomized_by": None,
        "inference": "welch",
        "srm": {"chi2": None, "df": None, "p_value": None, "counts": {}, "expected": {}},
        "units": {"eligible": 0, "assigned": 0, "measured": 0},
        "metrics": [],
        "replica_lag_seconds": 0.0,
    }


def test_results__one_unit_and_no_spread__null_not_nan(tenant, lab):
    # Given a control with one unit, b with no spread, c with two equal values, d unmeasured
    for key in ("a", "b", "c", "d"):
        lab.variant(key)
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("thickness", {"a": [1.0], "b": [1.05, 1.05, 1.05], "c": [1.2, 1.2]})
    # When
    response = tenant.get(RESULTS)
    # Then
    assert response.status_code == 200
    assert b"NaN" not in response.content and b"Infinity" not in response.content
    variants = metric_of(response.json(), "thickness")["variants"]
    assert_figures(
        variants["a"],
        {"n": 1, "mean": 1.0, "std": None, "min": 1.0, "max": 1.0, "yield": 1.0}
        | {"cp": None, "cpk": None}
        | dict.fromkeys(["cp_ci_low", "cp_ci_high", "cpk_ci_low", "cpk_ci_high"]),
    )
    assert variants["b"]["std"] == 0.0
    assert (variants["b"]["cp"], variants["b"]["cpk"]) == (None, None)
    comparison = variants["b"]["vs_control"]
    for key in ("diff", "t", "df", "p_value", "ci_low", "ci_high"):
        assert comparison[key] is None, key
    # Both yields are 100%: the difference is 0 and there is nothing to test
    assert comparison["yield_diff"] == 0.0
    assert (comparison["yield_p_value"], comparison["yield_ci_low"]) == (None, None)
    assert variants["d"] == {
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
        "vs_control": dict.fromkeys(comparison),
    }


def test_results__every_variant_removed__no_control_and_null_comparisons(tenant, lab):
    lab.variant("a", status=Status.REMOVED)
    lab.variant("b", status=Status.REMOVED)
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("thickness", {"a": [1.0, 1.02], "b": [1.05, 1.07]})
    report = tenant.get(RESULTS).json()
    assert (report["control"], report["control_reason"]) == (None, None)
    variants = metric_of(report, "thickness")["variants"]
    assert variants["a"]["n"] == variants["b"]["n"] == 2
    assert set(variants["a"]["vs_control"].values()) == {None}
    assert set(variants["b"]["vs_control"].values()) == {None}


def test_results__values_at_the_limits__in_spec(tenant, lab):
    lab.variant("a")
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("thickness", {"a": [0.9, 1.1, 0.8999999, 1.1000001]})
    assert metric_of(tenant.get(RESULTS).json(), "thickness")["variants"]["a"]["yield"] == 0.5


def test_results__extreme_values__every_finite_figure_reported(tenant, lab):
    # Given finite values whose squares overflow a double
    lab.variant("a")
    lab.variant("b")
    lab.metric("huge")
    lab.metric("thickness", lower_limit=0.9, upper_limit=1.1)
    lab.measure("huge", {"a": [1e200, -1e200, 3e200], "b": [1e300, 1.5e300]})
    lab.measure("thickness", {"a": [1.0, 1.02, 0.98], "b": [1.0, 1.04]})
    # When
    response = tenant.get(RESULTS)
    # Then
    assert response.status_code == 200, response.content
    report = response.json()
    huge = metric_of(report, "huge")["variants"]
    assert huge["a"]["mean"] == pytest.approx(1e200, rel=1e-15)
    assert huge["b"]["mean"] == pytest.approx(1.25e300, rel=1e-15)
    # Exact: stdev(1, -1, 3) = 2 and stdev(1, 1.5) = sqrt(0.125), times the scale
    assert huge["a"]["std"] == pytest.approx(2e200, rel=1e-15)
    assert huge["b"]["std"] == pytest.approx(math.sqrt(0.125) * 1e300, rel=1e-15)
    assert huge["b"]["vs_control"]["diff"] == pytest.approx(1.25e300, rel=1e-15)
    assert (huge["a"]["min"], huge["a"]["max"]) == (-1e200, 3e200)
    # And the ordinary metric is unaffected
    thickness = metric_of(report, "thickness")["variants"]["a"]
    assert thickness["std"] == pytest.approx(statistics.stdev([1.0, 1.02, 0.98]), rel=1e-14)


# --- access and cost -----------------------------------------------------------------------


def test_results__another_tenants_experiment__404(other_tenant, characterized):
    response = other_tenant.get(RESULTS)
    assert response.status_code == 404
    assert "widget" in response.json()["detail"]


def test_results__unknown_experiment_or_product__404(tenant, characterized):
    assert tenant.get("/products/widget/experiments/nope/results").status_code == 404
    assert tenant.get("/products/nope/experiments/etch/results").status_code == 404
    assert tenant.get("/products/widget/experiments/BAD KEY/results").status_code == 404


def test_results__no_token__401(client, characterized):
    assert client.get(f"/api/admin/v1{RESULTS}").status_code == 401


def test_results__query_count__fixed_whatever_the_data_size(
    tenant, lab, django_assert_max_num_queries
):
    # Given 3 variants × 4 metrics
    for key in ("a", "b", "c"):
        lab.variant(key)
    for key in ("m1", "m2", "m3", "m4"):
        lab.metric(key, lower_limit=0.0, upper_limit=1.0)

    def add_units(per_variant: int) -> None:
        for variant in ("a", "b", "c"):
            units = lab.units(variant, per_variant)
            for metric in lab.metrics:
                lab.measure_units(metric, units, [i / per_variant for i in range(per_variant)])

    def queries_of_one_report() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert tenant.get(RESULTS).status_code == 200
        return len(captured)

    add_units(3)
    small = queries_of_one_report()
    # When the data grows twenty-fold
    add_units(57)
    # Then the same queries: token, product, experiment, variants, metrics, assignment
    # counts, measured units, the two passes of the measurement aggregates (on PostgreSQL the
    # metrics' ranges, the pass and the second pass of the groups it does not keep, inside
    # the savepoint and settings of the analysis plan)
    plan = 4 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(9 + plan):
        assert queries_of_one_report() == small
    report = tenant.get(RESULTS).json()
    assert [v["n"] for v in report["metrics"][0]["variants"].values()] == [60, 60, 60]


def test_results__database_timeout__503_and_not_retried(tenant, characterized, monkeypatch):
    # Given the aggregate query is cancelled by the statement timeout
    calls = []

    def timing_out(rows, **kwargs):
        calls.append(kwargs)
        raise OperationalError("canceling statement due to statement timeout")

    monkeypatch.setattr(results_analysis, "grouped_moments", timing_out)
    # When
    response = tenant.get(RESULTS)
    # Then the client is told to retry, and the database is not asked twice
    assert response.status_code == 503
    assert len(calls) == 1


def test_results__openapi__documents_the_report(tenant):
    schema = tenant.get("/api/admin/v1/openapi.json").json()
    operation = schema["paths"]["/api/admin/v1/products/{product}/experiments/{experiment}/results"]
    assert "get" in operation
    variant = schema["components"]["schemas"]["VariantResultOut"]
    assert "yield" in variant["properties"]
    assert "vs_control" not in variant["required"]


# --- multiple comparisons ------------------------------------------------------------------


def comparisons_of(report):
    return [
        block["vs_control"]
        for metric in report["metrics"]
        for block in metric["variants"].values()
        if "vs_control" in block
    ]


def test_results__correction__each_family_adjusted_across_the_whole_report(tenant, characterized):
    # Given the default (Holm) and Bonferroni reports of the same data
    default = tenant.get(RESULTS).json()
    bonferroni = tenant.get(RESULTS, correction="bonferroni").json()
    assert (default["correction"], bonferroni["correction"]) == ("holm", "bonferroni")
    for key in ("p_value", "yield_p_value"):
        raw = [c[key] for c in comparisons_of(bonferroni)]
        family = [p for p in raw if p is not None]
        # The family is every non-null p-value of the report: metrics × treatment variants
        assert len(family) >= 2, key
        for comparison in comparisons_of(bonferroni):
            if comparison[key] is None:
                assert comparison[f"{key}_adjusted"] is None
            else:
                expected = min(1.0, comparison[key] * len(family))
                assert comparison[f"{key}_adjusted"] == pytest.approx(expected, rel=1e-15)
        # Holm: the smallest p-value is multiplied by the family size, never below the raw one
        holm = {id(c): c for c in comparisons_of(default)}
        smallest = min(family)
        [first] = [c for c in holm.values() if c[key] == smallest]
        assert first[f"{key}_adjusted"] == pytest.approx(min(1.0, smallest * len(family)))
        for comparison in holm.values():
            if comparison[key] is not None:
                assert comparison[key] <= comparison[f"{key}_adjusted"] <= 1.0


def test_results__correction_none__adjusted_equals_raw(tenant, characterized):
    for comparison in comparisons_of(tenant.get(RESULTS, correction="none").json()):
        assert comparison["p_value_adjusted"] == comparison["p_value"]
        assert comparison["yield_p_value_adjusted"] == comparison["yield_p_value"]


def test_results__unknown_correction__422(tenant, characterized):
    response = tenant.get(RESULTS, correction="sidak")
    assert response.status_code == 422
    assert response.json()["detail"]
