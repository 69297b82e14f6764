"""The factorial analysis: GET /products/{p}/analysis/factorial (docs/results.md §11).

References: statsmodels' ``anova_lm(ols("y ~ C(A, Sum)*C(B, Sum)"), typ=3)`` on balanced and
unbalanced random designs with 1, 2 and 3 factors, and a published two-way table
(Montgomery, Design and Analysis of Experiments, battery life example).
"""

import itertools

import numpy as np
import pandas as pd
import pytest
from django.db import connection
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

from lab.models import Status

FACTORIAL = "/products/widget/analysis/factorial"


def build(plant, levels: dict[str, list[str]], counts, rng, effect=1.0):
    """Units in every cell of the design with ``counts[cell]`` units, values normal around a
    cell-dependent mean. Returns the data as a frame for statsmodels."""
    for experiment, variants in levels.items():
        plant.experiment(experiment, variants)
    plant.metric("y")
    records = []
    names = list(levels)
    for index, cell in enumerate(itertools.product(*levels.values())):
        n = counts(index)
        centre = 10.0 + effect * np.sin(index + 1.0)
        values = list(centre + rng.normal(0.0, 0.5, n))
        plant.units([dict(zip(names, cell, strict=True))] * n, {"y": values})
        records += [dict(zip(names, cell, strict=True), y=v) for v in values]
    return pd.DataFrame.from_records(records)


def statsmodels_table(frame, names):
    terms = "*".join(f"C({name}, Sum)" for name in names)
    table = anova_lm(ols(f"y ~ {terms}", data=frame).fit(), typ=3)
    rows = {}
    for index, row in table.iterrows():
        if index in ("Intercept",):
            continue
        if index == "Residual":
            rows["residual"] = row
            continue
        source = ":".join(part.split(",")[0].removeprefix("C(") for part in index.split(":"))
        rows[source] = row
    return rows


def assert_matches_statsmodels(report, frame, names):
    expected = statsmodels_table(frame, names)
    sources = [row["source"] for row in report["anova"]]
    effects = [
        ":".join(c) for k in range(1, len(names) + 1) for c in itertools.combinations(names, k)
    ]
    assert sources == [*effects, "residual", "total"]
    for row in report["anova"][:-1]:
        reference = expected[row["source"]]
        assert row["df"] == int(reference["df"]), row["source"]
        assert row["sum_sq"] == pytest.approx(reference["sum_sq"], rel=1e-10), row["source"]
        if row["source"] != "residual":
            assert row["f"] == pytest.approx(reference["F"], rel=1e-10), row["source"]
            assert row["p_value"] == pytest.approx(reference["PR(>F)"], rel=1e-8, abs=1e-300)
    total = report["anova"][-1]
    assert total["df"] == len(frame) - 1
    assert total["sum_sq"] == pytest.approx(((frame.y - frame.y.mean()) ** 2).sum(), rel=1e-12)
    fit = ols("y ~ " + "*".join(f"C({n}, Sum)" for n in names), data=frame).fit()
    assert report["r_squared"] == pytest.approx(fit.rsquared, rel=1e-10)
    assert report["residual_std"] == pytest.approx(np.sqrt(fit.mse_resid), rel=1e-10)


DESIGNS = {
    "one-factor": {"etch": ["e1", "e2", "e3"]},
    "two-factors": {"etch": ["e1", "e2"], "anneal": ["n1", "n2", "n3"]},
    "three-factors": {"etch": ["e1", "e2"], "anneal": ["n1", "n2", "n3"], "coat": ["c1", "c2"]},
}


@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("balanced", [True, False], ids=["balanced", "unbalanced"])
def test_factorial__random_design__matches_statsmodels_type3(tenant, plant, design, balanced):
    # Given a full factorial with every cell measured, equal or unequal cell sizes
    rng = np.random.default_rng(7 if balanced else 11)
    levels = DESIGNS[design]
    frame = build(plant, levels, (lambda i: 4) if balanced else (lambda i: 2 + (i * 7) % 5), rng)
    # When
    response = tenant.get(FACTORIAL, experiments=",".join(levels), metric="y")
    # Then
    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["experiments"], report["metric"], report["sum_sq_type"]) == (
        list(levels),
        "y",
        3,
    )
    assert report["n"] == len(frame)
    assert_matches_statsmodels(report, frame, list(levels))
    # And each cell describes its units
    first = report["cells"][0]
    assert list(first["variants"].values()) == [variants[0] for variants in levels.values()]
    cell_values = frame
    for name, variant in first["variants"].items():
        cell_values = cell_values[cell_values[name] == variant]
    assert first["n"] == len(cell_values)
    assert first["mean"] == pytest.approx(cell_values.y.mean(), rel=1e-14)
    assert first["std"] == pytest.approx(cell_values.y.std(), rel=1e-12)
    assert first["yield"] is None  # y has no limits


BATTERY = {  # Montgomery, Example 5.1: life (hours) by material type × temperature (°F)
    ("m1", "t15"): [130, 155, 74, 180],
    ("m1", "t70"): [34, 40, 80, 75],
    ("m1", "t125"): [20, 70, 82, 58],
    ("m2", "t15"): [150, 188, 159, 126],
    ("m2", "t70"): [136, 122, 106, 115],
    ("m2", "t125"): [25, 70, 58, 45],
    ("m3", "t15"): [138, 110, 168, 160],
    ("m3", "t70"): [174, 150, 120, 139],
    ("m3", "t125"): [96, 82, 60, 104],
}


def test_factorial__published_two_way_table__battery_life(tenant, plant):
    # Given the battery life data: 3 materials × 3 temperatures, 4 batteries per cell
    plant.experiment("material", ["m1", "m2", "m3"])
    plant.experiment("temperature", ["t15", "t70", "t125"])
    plant.metric("life", lower_limit=60.0)
    for (material, temperature), values in BATTERY.items():
        plant.units(
            [{"material": material, "temperature": temperature}] * len(values),
            {"life": [float(v) for v in values]},
        )
    # When
    report = tenant.get(FACTORIAL, experiments="material,temperature", metric="life").json()
    # Then the published table (SS to 2 decimals, F to 2)
    rows = {row["source"]: row for row in report["anova"]}
    published = {
        "material": (2, 10683.72, 7.91),
        "temperature": (2, 39118.72, 28.97),
        "material:temperature": (4, 9613.78, 3.56),
    }
    for source, (df, sum_sq, f) in published.items():
        assert rows[source]["df"] == df
        assert rows[source]["sum_sq"] == pytest.approx(sum_sq, abs=0.005)
        assert rows[source]["f"] == pytest.approx(f, abs=0.005)
    assert (rows["residual"]["df"], rows["total"]["df"]) == (27, 35)
    assert rows["residual"]["sum_sq"] == pytest.approx(18230.75, abs=0.005)
    assert rows["total"]["sum_sq"] == pytest.approx(77646.97, abs=0.005)
    # And the yield of a cell: m1 at 70°F has 2 of 4 batteries at or above 60 h
    [cell] = [
        c for c in report["cells"] if c["variants"] == {"material": "m1", "temperature": "t70"}
    ]
    assert cell["yield"] == 0.5


def test_factorial__empty_cell__anova_null_with_note(tenant, plant):
    plant.experiment("a", ["a1", "a2"])
    plant.experiment("b", ["b1", "b2"])
    plant.metric("y")
    for cell in (("a1", "b1"), ("a1", "b2"), ("a2", "b1")):
        plant.units([{"a": cell[0], "b": cell[1]}] * 3, {"y": [1.0, 2.0, 3.5]})
    report = tenant.get(FACTORIAL, experiments="a,b", metric="y").json()
    assert report["anova"] is None
    assert "a=a2, b=b2" in report["anova_note"]
    empty = report["cells"][-1]
    assert empty == {
        "variants": {"a": "a2", "b": "b2"},
        "n": 0,
        "mean": None,
        "std": None,
        "yield": None,
    }
    assert (report["r_squared"], report["residual_std"]) == (None, None)


def test_factorial__one_unit_per_cell__no_residual_df_no_f(tenant, plant):
    plant.experiment("a", ["a1", "a2"])
    plant.experiment("b", ["b1", "b2"])
    plant.metric("y")
    for i, cell in enumerate(itertools.product(["a1", "a2"], ["b1", "b2"])):
        plant.units([{"a": cell[0], "b": cell[1]}], {"y": [float(i * i)]})
    report = tenant.get(FACTORIAL, experiments="a,b", metric="y").json()
    residual = report["anova"][-2]
    assert (residual["source"], residual["df"], residual["sum_sq"]) == ("residual", 0, 0.0)
    for row in report["anova"][:-2]:
        assert (row["f"], row["p_value"]) == (None, None)
        assert row["sum_sq"] is not None
    assert report["residual_std"] is None
    assert report["anova_note"]


def test_factorial__units_not_in_every_experiment_or_on_removed_variants__left_out(tenant, plant):
    plant.experiment("a", ["a1", "a2", "gone"])
    plant.experiment("b", ["b1", "b2"])
    plant.metric("y")
    for cell in itertools.product(["a1", "a2"], ["b1", "b2"]):
        plant.units([{"a": cell[0], "b": cell[1]}] * 2, {"y": [1.0, 2.0]})
    plant.units([{"a": "a1"}], {"y": [100.0]})  # never went through B
    plant.units([{"a": "gone", "b": "b1"}], {"y": [100.0]})
    plant.variants[("a", "gone")].status = Status.REMOVED
    plant.variants[("a", "gone")].save()
    report = tenant.get(FACTORIAL, experiments="a,b", metric="y").json()
    assert report["n"] == 8
    assert len(report["cells"]) == 4


@pytest.mark.parametrize(
    ("query", "status"),
    [
        # Not 1 to 3 distinct keys, separated by commas or repeated: refused by the schema.
        ({"experiments": "a,a", "metric": "y"}, 422),
        ({"experiments": ["a", "a"], "metric": "y"}, 422),
        ({"experiments": "a,b,c,d", "metric": "y"}, 422),
        ({"experiments": ["a,b", "c", "d"], "metric": "y"}, 422),
        ({"experiments": "", "metric": "y"}, 422),
        ({"experiments": "a,,b", "metric": "y"}, 422),
        ({"experiments": "a,nope", "metric": "y"}, 404),
        ({"experiments": "a", "metric": "nope"}, 404),
        ({"experiments": "a"}, 422),
        ({"experiments": "a/../b", "metric": "y"}, 422),
        ({"experiments": "single", "metric": "y"}, 400),
    ],
)
def test_factorial__bad_query__clear_error(tenant, plant, query, status):
    plant.experiment("a", ["a1", "a2"])
    plant.experiment("b", ["b1", "b2"])
    plant.experiment("single", ["only"])
    plant.metric("y")
    response = tenant.get(FACTORIAL, **query)
    assert response.status_code == status, response.content
    assert response.json()["detail"]


def test_factorial__another_tenants_product__404(other_tenant, plant):
    plant.experiment("a", ["a1", "a2"])
    plant.metric("y")
    assert other_tenant.get(FACTORIAL, experiments="a", metric="y").status_code == 404


def test_factorial__fixed_number_of_queries(tenant, plant, django_assert_max_num_queries):
    rng = np.random.default_rng(3)
    build(plant, DESIGNS["three-factors"], lambda i: 3, rng)
    # token, product, metric, 3 × (experiment, its variants), the two aggregate passes (on
    # PostgreSQL: the metric's range, the one pass and the second pass of the cells it does
    # not keep, and the savepoint and settings of the analysis plan)
    plan = 4 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(11 + plan):
        assert tenant.get(FACTORIAL, experiments="etch,anneal,coat", metric="y").status_code == 200


@pytest.mark.parametrize(
    "experiments",
    ["a,b", " a , b ", ["a", "b"], ["a,b"]],
    ids=["commas", "spaces", "repeated", "one"],
)
def test_factorial__comma_separated_or_repeated__same_report(tenant, plant, experiments):
    # Given two factors
    plant.experiment("a", ["a1", "a2"])
    plant.experiment("b", ["b1", "b2"])
    plant.metric("y")
    for i, (a, b) in enumerate([("a1", "b1"), ("a1", "b2"), ("a2", "b1"), ("a2", "b2")] * 2):
        plant.units([{"a": a, "b": b}], {"y": [float(i)]})
    # When the list is sent in either form
    response = tenant.get(FACTORIAL, experiments=experiments, metric="y")
    # Then the same factors, in the order given
    assert response.status_code == 200, response.content
    assert response.json()["experiments"] == ["a", "b"]
    assert response.json()["n"] == 8


def test_factorial__duplicate_key__422_naming_it(tenant, plant):
    response = tenant.get(FACTORIAL, experiments="a,a", metric="y")
    assert response.status_code == 422
    assert "'a' is listed twice" in str(response.json()["detail"])
