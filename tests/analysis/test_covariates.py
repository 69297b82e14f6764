"""Covariate adjustment of the results (``?covariate=``, docs/results.md §18).

Reference: statsmodels ``ols("y ~ T * xc").fit(cov_type="HC2", use_t=True)`` (Lin's
interacted regression, xc = x − x̄) and its cluster variant with df = G − 1; HC2 without a
covariate equals Welch's standard error.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.formula.api import ols

from lab.models import Step, Unit

RESULTS = "/products/widget/experiments/etch/results"
TIGHT = 1e-10


def build(plant, rng, n_a=40, n_b=35, offset=0.0, effect=0.5, randomize_by=None, lots=None):
    plant.experiment("etch", ["a", "b"], randomize_by=randomize_by)
    plant.metric("x")
    plant.metric("y")
    records = []
    for variant, n, shift in (("a", n_a, 0.0), ("b", n_b, effect)):
        x = rng.normal(0.0, 1.0, n)
        y = 2.0 + shift + (0.8 + 0.3 * shift) * x + rng.normal(0.0, 0.5 + shift, n)
        xs, ys = [float(offset + v) for v in x], [float(offset + v) for v in y]
        units = plant.units([{"etch": variant}] * n, {"x": xs, "y": ys})
        for i, unit in enumerate(units):
            lot = None if lots is None else f"{variant}{i % lots}"
            if lot is not None:
                Unit.objects.filter(pk=unit.pk).update(attributes={"lot": lot})
            # Differences from the offset are exact (Sterbenz): the reference fit sees them.
            records.append(
                {
                    "T": 1.0 if variant == "b" else 0.0,
                    "x": xs[i] - offset,
                    "y": ys[i] - offset,
                    "lot": lot,
                }
            )
    return pd.DataFrame.from_records(records)


def reference(frame, groups=None):
    frame = frame.assign(xc=frame.x - frame.x.mean())
    if groups is None:
        fit = ols("y ~ T * xc", data=frame).fit(cov_type="HC2", use_t=True)
        df = len(frame) - 4
    else:
        codes = pd.factorize(frame[groups])[0]
        fit = ols("y ~ T * xc", data=frame).fit(
            cov_type="cluster", cov_kwds={"groups": codes}, use_t=True
        )
        df = len(set(codes)) - 1
    b, se = fit.params["T"], fit.bse["T"]
    t = b / se
    margin = stats.t.ppf(0.975, df) * se
    return {
        "n": len(frame),
        "diff": b,
        "se": se,
        "t": t,
        "df": df,
        "p_value": 2 * stats.t.sf(abs(t), df),
        "ci_low": b - margin,
        "ci_high": b + margin,
    }


def adjusted_block(report, metric="y"):
    [block] = [m for m in report["metrics"] if m["metric"] == metric]
    return block["variants"]["b"]["vs_control"]["adjusted"]


@pytest.mark.parametrize("offset", [0.0, 1e9], ids=["plain", "offset-1e9"])
def test_results__covariate__lin_hc2_equals_statsmodels(tenant, plant, offset):
    # Given y measured after x on the same units, y depending on x differently per arm
    frame = build(plant, np.random.default_rng(11), offset=offset)
    # When the results are adjusted with x
    response = tenant.get(RESULTS, covariate="x")
    assert response.status_code == 200, response.content
    report = response.json()
    adjusted = adjusted_block(report)
    # Then Lin's estimate, HC2 se, t(n − 4), p and interval are statsmodels'
    for key, value in reference(frame).items():
        assert adjusted[key] == pytest.approx(value, rel=TIGHT), key
    # And the variance reduction is against Welch's se on the same units
    a, b = (frame[frame["T"] == v]["y"] for v in (0.0, 1.0))
    welch_se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    expected = 1 - (reference(frame)["se"] / welch_se) ** 2
    assert adjusted["variance_reduction"] == pytest.approx(expected, rel=1e-9)
    assert adjusted["variance_reduction"] > 0.3
    assert "p_value_adjusted" in adjusted
    # The covariate's own block has no adjustment
    covariate_block = next(m for m in report["metrics"] if m["metric"] == "x")
    assert "adjusted" not in covariate_block["variants"]["b"]["vs_control"]
    assert report["covariate"] == "x"


def test_hc2_without_covariate__equals_welch_standard_error():
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"T": [0.0] * 20 + [1.0] * 13, "y": rng.normal(0, 1, 33) * 3})
    hc2 = ols("y ~ T", data=frame).fit(cov_type="HC2").bse["T"]
    a, b = frame.y[frame["T"] == 0], frame.y[frame["T"] == 1]
    assert hc2 == pytest.approx(np.sqrt(a.var() / len(a) + b.var() / len(b)), rel=1e-13)


def test_results__covariate_randomized_by_lot__cr1_equals_statsmodels(tenant, plant):
    frame = build(plant, np.random.default_rng(12), randomize_by="lot", lots=6)
    report = tenant.get(RESULTS, covariate="x").json()
    adjusted = adjusted_block(report)
    for key, value in reference(frame, groups="lot").items():
        assert adjusted[key] == pytest.approx(value, rel=TIGHT), key


def test_results__covariate_measured_after_the_treatment__422_naming_both_steps(tenant, plant):
    # Given the experiment changes step etch (position 2) and x is measured at inspect (3)
    etch = Step.objects.create(product=plant.product, key="etch", position=2)
    inspect = Step.objects.create(product=plant.product, key="inspect", position=3)
    build(plant, np.random.default_rng(13), n_a=5, n_b=5)
    plant.experiments["etch"].step = etch
    plant.experiments["etch"].save()
    plant.metrics["x"].step = inspect
    plant.metrics["x"].save()
    # When
    response = tenant.get(RESULTS, covariate="x")
    # Then
    assert response.status_code == 422, response.content
    assert "'inspect'" in response.json()["detail"] and "'etch'" in response.json()["detail"]
    # An unknown covariate is a 422 too
    assert tenant.get(RESULTS, covariate="nope").status_code == 422


# The worked example of docs/results.md §18: (x, y) per unit, as the page prints them.
WORKED_EXAMPLE = {
    "a": [(4.9, 10.1), (5.3, 10.9), (5.0, 10.2), (5.6, 11.4), (5.2, 10.6), (4.8, 9.9)],
    "b": [(5.1, 10.9), (5.5, 11.6), (4.7, 10.1), (5.4, 11.5), (5.0, 10.8), (5.2, 11.1)],
}


def test_results__docs_worked_example__figures_of_the_page(tenant, plant):
    plant.experiment("etch", ["a", "b"])
    plant.metric("x")
    plant.metric("y")
    for variant, pairs in WORKED_EXAMPLE.items():
        plant.units(
            [{"etch": variant}] * len(pairs),
            {"x": [x for x, _ in pairs], "y": [y for _, y in pairs]},
        )
    report = tenant.get(RESULTS, covariate="x").json()
    comparison = next(m for m in report["metrics"] if m["metric"] == "y")["variants"]["b"][
        "vs_control"
    ]
    adjusted = comparison["adjusted"]
    shown = {
        key: round(adjusted[key], 3)
        for key in ("diff", "se", "t", "df", "ci_low", "ci_high", "variance_reduction")
    }
    assert shown == {
        "diff": 0.452,
        "se": 0.033,
        "t": 13.526,
        "df": 8.0,
        "ci_low": 0.375,
        "ci_high": 0.529,
        "variance_reduction": 0.989,
    }
    assert f"{adjusted['p_value']:.1e}" == "8.6e-07"
    assert adjusted["n"] == 12
    # Unadjusted, the same units give diff 0.483, t 1.511, p 0.162
    plain = {key: round(comparison[key], 3) for key in ("diff", "t", "p_value")}
    assert plain == {"diff": 0.483, "t": 1.511, "p_value": 0.162}
