"""The analysis of a designed experiment: GET .../designs/{d}/analysis and effects.svg
(docs/designs.md, "Analysis").

References: an OLS on the ±1 model matrix (numpy's lstsq) for replicated and unreplicated
data, and Montgomery, Design and Analysis of Experiments (8th ed.), Example 6.2 (the pilot
plant filtration rate, an unreplicated 2^4): its effects (Table 6.11) and Lenth's method on
them in Section 6.5 (PSE = 1.5 · 1.75 = 2.625, ME = t(0.025, 5) · PSE = 6.75).
"""

import itertools
import tempfile
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lab.models import Assignment, Variant
from rules.designs import LETTERS

DESIGNS = "/products/widget/designs"


def build(tenant, plant, factors, runs, counts, values, metric="y"):
    """A design over ``factors`` with ``counts[r]`` units in run r + 1 measured with the next
    values of ``values``; returns the design's answer and the (levels, value) of each unit."""
    for key in factors:
        plant.experiment(key, ["low", "high"])
    plant.metric(metric)
    design = tenant.post(DESIGNS, {"key": "d", "factors": factors, "runs": runs})
    assert design.status_code == 201, design.content
    body = design.json()
    data, assignments, measured = [], [], []
    source = iter(values)
    for row, count in zip(body["runs_table"], counts, strict=True):
        for _ in range(count):
            value = next(source)
            assignments.append(row["levels"])
            measured.append(value)
            data.append(([int(row["levels"][f] == "high") for f in factors], value))
    plant.units(assignments, {metric: measured})
    return body, data


def numpy_ols(data, terms):
    """OLS of y on the intercept and the ±1 product column of each term (letters)."""
    levels = np.array([levels for levels, _ in data], dtype=float) * 2 - 1
    y = np.array([value for _, value in data])
    columns = [np.ones(len(y))]
    for term in terms:
        columns.append(np.prod(levels[:, [LETTERS.index(c) for c in term]], axis=1))
    x = np.column_stack(columns)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = len(y) - x.shape[1]
    if df == 0:
        return beta[1:], None, None, None
    sigma2 = float(((y - x @ beta) ** 2).sum() / df)
    se = np.sqrt(sigma2 * np.diag(np.linalg.inv(x.T @ x)))
    t = beta / se
    return beta[1:], se[1:], t[1:], 2 * stats.t.sf(np.abs(t[1:]), df)


def analysis(tenant, metric="y"):
    response = tenant.get(f"{DESIGNS}/d/analysis", metric=metric)
    assert response.status_code == 200, response.content
    return response.json()


def assert_close(actual, expected, scale):
    assert np.allclose(actual, expected, rtol=1e-10, atol=1e-10 * scale), (actual, expected)


def test_analysis__replicated_2_7_4__matches_numpy_ols(tenant, plant):
    # Given a 2^(7-4) with 2 to 5 units per run, values around 100
    rng = np.random.default_rng(7)
    counts = list(rng.integers(2, 6, size=8))
    values = list(100 + rng.normal(0, 1, size=sum(counts)))
    _, data = build(tenant, plant, list("abcdefg"), 8, counts, values)
    # When
    report = analysis(tenant)
    # Then one row per chain, main effects first, and the numbers of an OLS
    terms = [row["term"] for row in report["effects"]]
    assert terms == list("ABCDEFG")
    assert report["effects"][0]["aliases"] == ["BD", "CE", "FG", "BCG", "BEF", "CDF", "DEG"]
    assert (report["n"], report["excluded"], report["runs_observed"]) == (sum(counts), 0, 8)
    assert report["residual_df"] == sum(counts) - 8
    beta, se, t, p = numpy_ols(data, terms)
    rows = report["effects"]
    assert_close([r["coefficient"] for r in rows], beta, 1.0)
    assert_close([r["effect"] for r in rows], 2 * beta, 1.0)
    assert_close([r["se"] for r in rows], se, 1.0)
    assert_close([r["t"] for r in rows], t, 1.0)
    assert_close([r["p_value"] for r in rows], p, 1.0)
    assert report["pse"] is None and report["margin_of_error"] is None


def test_analysis__unreplicated_2_5_1__matches_numpy_and_lenth(tenant, plant):
    # Given a 2^(5-1) with one unit per run
    rng = np.random.default_rng(11)
    values = list(50 + 3 * rng.normal(size=16))
    _, data = build(tenant, plant, list("abcde"), 16, [1] * 16, values)
    # When
    report = analysis(tenant)
    # Then 15 chains (5 main effects, 10 two-factor interactions aliased with triples)
    rows = report["effects"]
    terms = [row["term"] for row in rows]
    assert terms[:5] == list("ABCDE") and len(terms) == 15
    assert all(len(term) == 2 for term in terms[5:])
    beta, *_ = numpy_ols(data, terms)
    assert_close([r["coefficient"] for r in rows], beta, 1.0)
    assert all(r["se"] is None and r["t"] is None and r["p_value"] is None for r in rows)
    # Lenth on the effects
    effects = np.abs(2 * beta)
    s0 = 1.5 * np.median(effects)
    pse = 1.5 * np.median(effects[effects < 2.5 * s0])
    assert report["residual_df"] == 0
    assert report["pse"] == pytest.approx(pse, rel=1e-12)
    margin = stats.t.ppf(0.975, 5) * pse
    assert report["margin_of_error"] == pytest.approx(margin, rel=1e-12)
    assert [r["active"] for r in rows] == [bool(abs(r["effect"]) > margin) for r in rows]


# Montgomery, Example 6.2: filtration rate in standard order (1), a, b, ab, c, ..., abcd.
FILTRATION = [45, 71, 48, 65, 68, 60, 80, 65, 43, 100, 45, 104, 75, 86, 70, 96]
PUBLISHED_EFFECTS = {
    "A": 21.625, "B": 3.125, "C": 9.875, "D": 14.625, "AB": 0.125, "AC": -18.125,
    "AD": 16.625, "BC": 2.375, "BD": -0.375, "CD": -1.125, "ABC": 1.875, "ABD": 4.125,
    "ACD": -1.625, "BCD": -2.625, "ABCD": 1.375,
}  # fmt: skip


def test_analysis__montgomery_filtration_example__reproduces_effects_and_lenth(tenant, plant):
    # Given the unreplicated 2^4 of Montgomery's Example 6.2
    build(tenant, plant, ["temperature", "pressure", "concentration", "stirring"], 16,
          [1] * 16, FILTRATION)  # fmt: skip
    # When
    report = analysis(tenant)
    # Then the published effects, Lenth's PSE 2.625 and margin of error 6.75
    effects = {row["term"]: row["effect"] for row in report["effects"]}
    assert effects == pytest.approx(PUBLISHED_EFFECTS, abs=1e-12)
    assert report["pse"] == pytest.approx(2.625, abs=1e-12)
    assert report["margin_of_error"] == pytest.approx(6.75, abs=0.005)
    active = {row["term"] for row in report["effects"] if row["active"]}
    assert active == {"A", "C", "D", "AC", "AD"}


def test_analysis__units_off_the_fraction_or_unassigned__are_excluded_and_counted(tenant, plant):
    # Given a 2^(3-1) with two units per run, one unit missing a factor's assignment and one
    # forced to a combination that is not a run
    build(tenant, plant, ["a", "b", "c"], 4, [2] * 4, [float(i) for i in range(8)])
    plant.units([{"a": "low", "b": "low"}], {"y": [100.0]})
    plant.units([{"a": "high", "b": "low", "c": "low"}], {"y": [200.0]})  # C = AB says high
    # and one measured unit without any assignment, one whose C is a variant that is neither
    # level (stored before the variant list was what the design requires)
    plant.units([{}], {"y": [300.0]})
    plant.variants[("c", "old")] = Variant.objects.create(
        experiment=plant.experiments["c"], key="old"
    )
    plant.units([{"a": "low", "b": "low", "c": "old"}], {"y": [400.0]})
    # When
    report = analysis(tenant)
    # Then they are counted as excluded, not in n, and the runs' effects are those of the
    # eight units alone
    assert (report["n"], report["excluded"]) == (8, 4)
    assert Assignment.objects.count() == 8 * 3 + 2 + 3 + 3
    effects = {row["term"]: row["effect"] for row in report["effects"]}
    # Runs (1) a b ab … hold 0,1 | 2,3 | 4,5 | 6,7: A = 2, B = 4, the chain C = AB 0.
    assert effects == pytest.approx({"A": 2.0, "B": 4.0, "C": 0.0}, abs=1e-12)


def test_analysis__a_run_without_units__answers_no_effects_and_says_which(tenant, plant):
    build(tenant, plant, ["a", "b", "c"], 4, [1, 0, 2, 1], [1.0, 2.0, 3.0, 4.0])
    report = analysis(tenant)
    assert report["effects"] is None and report["runs_observed"] == 3
    assert "run 2" in report["note"]


def test_analysis__unknown_metric_or_design__404(tenant, plant):
    build(tenant, plant, ["a", "b"], 4, [1] * 4, [1.0, 2.0, 3.0, 4.0])
    assert tenant.get(f"{DESIGNS}/d/analysis", metric="nope").status_code == 404
    assert tenant.get(f"{DESIGNS}/nope/analysis", metric="y").status_code == 404
    assert tenant.get(f"{DESIGNS}/d/analysis").status_code == 422


def test_effects_svg__is_a_labelled_half_normal_plot(tenant, plant):
    build(tenant, plant, ["temperature", "pressure", "concentration", "stirring"], 16,
          [1] * 16, FILTRATION)  # fmt: skip
    response = tenant.client.get(
        f"/api/admin/v1{DESIGNS}/d/effects.svg",
        {"metric": "y"},
        HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    text = response.content.decode()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for label in ("AC", "AD", "half-normal quantile", "|effect|", "Lenth margin of error 6.748"):
        assert label in text, label


def test_numpy_reference__sees_the_chains_as_orthogonal():
    # The reference itself: a saturated ±1 model of a 2^(3-1) is invertible.
    data = [([a, b, a ^ b ^ 1], float(a + 2 * b)) for a, b in itertools.product([0, 1], [0, 1])]
    beta, se, *_ = numpy_ols(data, ["A", "B", "AB"])
    assert se is None and np.allclose(beta, [0.5, 1.0, 0.0])


MEASURE_IN_BROWSER = """<script>
const svg = document.querySelector("svg");
const box = svg.getBoundingClientRect();
const texts = [...svg.querySelectorAll("text")].map((t) => {
  const b = t.getBBox();
  return `${t.textContent.trim()}@${b.width.toFixed(1)}x${b.height.toFixed(1)}`;
});
document.body.dataset.size = `${box.width}x${box.height}`;
document.body.dataset.texts = JSON.stringify(texts);
</script>"""


def test_effects_svg__renders_in_chromium_with_readable_labels(tenant, plant):
    import html
    import json
    import re

    from tests import browser
    from tests.analysis.browser import non_white_share, screenshot_svg

    # Given the half-normal plot of Montgomery's filtration example
    build(tenant, plant, ["temperature", "pressure", "concentration", "stirring"], 16,
          [1] * 16, FILTRATION)  # fmt: skip
    svg = tenant.client.get(
        f"/api/admin/v1{DESIGNS}/d/effects.svg",
        {"metric": "y"},
        HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
    ).content.decode()
    # When Chromium lays it out inline in a page (and draws it as a picture)
    inline = re.sub(r"^<\?xml[^>]*>", "", svg.lstrip())
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.html"
        page.write_text(f"<!doctype html><html><body>{inline}{MEASURE_IN_BROWSER}</body></html>")
        dom = browser.render_dom(page.as_uri())
    size = re.search(r'data-size="([\d.]+)x([\d.]+)"', dom)
    texts = json.loads(html.unescape(re.search(r'data-texts="([^"]*)"', dom).group(1)))
    # Then the picture has a sane size
    assert size is not None, dom[:2000]
    width, height = float(size.group(1)), float(size.group(2))
    assert 300 <= width <= 2000 and 200 <= height <= 1500, (width, height)
    # and its labels are laid-out text of a readable size: every term, both axes, the margin
    boxes = {}
    for text in texts:
        label, _, box = text.rpartition("@")
        w, h = map(float, box.split("x"))
        boxes[label] = (w, h)
    for label in ("AC", "AD", "A", "half-normal quantile", "|effect|"):
        assert label in boxes, (label, sorted(boxes))
        w, h = boxes[label]
        assert w > 0 and h >= 8, (label, w, h)
    assert any(label.startswith("Lenth margin of error") for label in boxes), sorted(boxes)
    image = screenshot_svg(svg)
    assert 0.01 < non_white_share(image) < 0.9
