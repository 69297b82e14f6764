"""The SVG plots render in a real browser (headless Chromium) and are not blank."""

import itertools
import math
import re
from xml.etree import ElementTree

import pytest
from scipy import stats

from tests.analysis.browser import non_white_share, screenshot_svg

BASE = "/products/widget"


@pytest.fixture
def measured(plant):
    plant.experiment("etch", ["short", "long"])
    plant.experiment("anneal", ["cool", "hot"])
    plant.metric("thickness", lower_limit=0.9, nominal=1.0, upper_limit=1.1, unit_of_measure="mm")
    for i, (etch, anneal) in enumerate(itertools.product(["short", "long"], ["cool", "hot"])):
        values = [1.0 + 0.03 * i + 0.01 * ((j * 7) % 5 - 2) for j in range(15)]
        values[-1] += 0.3 if i == 3 else 0.0  # one point beyond the limits on long/hot
        plant.units([{"etch": etch, "anneal": anneal}] * len(values), {"thickness": values})
    return plant


@pytest.mark.parametrize(
    ("path", "query"),
    [
        (f"{BASE}/experiments/etch/results.svg", {"metric": "thickness"}),
        (f"{BASE}/experiments/etch/control-chart.svg", {"metric": "thickness", "variant": "long"}),
        (f"{BASE}/analysis/factorial.svg", {"experiments": "etch,anneal", "metric": "thickness"}),
    ],
    ids=["results", "control-chart", "factorial"],
)
def test_plots__each_svg__renders_in_chromium_and_is_not_blank(tenant, measured, path, query):
    # When
    response = tenant.get(path, **query)
    # Then a standalone SVG document
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "image/svg+xml"
    svg = response.content.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # that a browser draws: a good share of the page is ink, and it has detail
    image = screenshot_svg(svg)
    share = non_white_share(image)
    assert 0.01 < share < 0.9, share
    assert len(image.resize((200, 140)).getcolors(maxcolors=200 * 140)) > 20


def test_plots__control_chart__marks_points_beyond_the_limits(tenant, measured):
    response = tenant.get(
        f"{BASE}/experiments/etch/control-chart.svg", metric="thickness", variant="long"
    )
    svg = response.content.decode()
    assert "beyond the limits" in svg and "UCL" in svg and "LCL" in svg


def test_plots__results__shows_the_spec_limits(tenant, measured):
    svg = tenant.get(f"{BASE}/experiments/etch/results.svg", metric="thickness").content.decode()
    assert "LSL 0.9" in svg and "USL 1.1" in svg and "nominal 1" in svg


def test_plots__no_data_or_bad_query__picture_or_clear_error(tenant, measured):
    measured.metric("unmeasured")
    empty = tenant.get(f"{BASE}/experiments/etch/results.svg", metric="unmeasured")
    assert empty.status_code == 200 and "no measurements" in empty.content.decode()
    missing = tenant.get(
        f"{BASE}/experiments/etch/control-chart.svg", metric="thickness", variant="nope"
    )
    assert missing.status_code == 404 and missing.json()["detail"]
    assert tenant.get(f"{BASE}/experiments/etch/results.svg").status_code == 422


def test_plots__another_tenant__404(other_tenant, measured):
    response = other_tenant.get(f"{BASE}/experiments/etch/results.svg", metric="thickness")
    assert response.status_code == 404


SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_groups(svg: str) -> dict:
    """The SVG's groups that have an id, by id."""
    root = ElementTree.fromstring(svg)
    return {g.get("id"): g for g in root.iter(f"{SVG_NS}g") if g.get("id")}


def texts(element) -> list[str]:
    return [t.text for t in element.iter(f"{SVG_NS}text") if t.text]


def markers(group) -> int:
    return len(list(group.iter(f"{SVG_NS}use")))


def test_plots__control_chart__individuals_and_moving_range_panels_with_limits(tenant, measured):
    # Given the chart's statistics
    chart = tenant.get(f"{BASE}/experiments/etch/control-chart", metric="thickness").json()
    long = chart["variants"]["long"]
    # When its picture is drawn
    svg = tenant.get(
        f"{BASE}/experiments/etch/control-chart.svg", metric="thickness", variant="long"
    ).content.decode()
    groups = svg_groups(svg)
    # Then the individuals panel: every point, center and control limits, in the metric's unit
    individuals = texts(groups["individuals"])
    assert markers(groups["individual-points"]) == long["n"] == 30
    assert f"UCL {long['ucl']:.6g}" in individuals and f"LCL {long['lcl']:.6g}" in individuals
    assert f"center {long['center']:.6g}" in individuals
    assert "individual value (mm)" in individuals
    # and below it the moving ranges (one per point after the first) with their limits
    ranges = texts(groups["moving-range"])
    assert markers(groups["moving-range-points"]) == long["n"] - 1
    assert f"UCL {long['mr_ucl']:.6g}" in ranges and f"mean MR {long['mr_bar']:.6g}" in ranges
    assert "LCL 0" in ranges and "moving range (mm)" in ranges


def test_plots__interaction__95_percent_bars_and_units(tenant, measured):
    # Given the cells of the factorial analysis
    report = tenant.get(
        f"{BASE}/analysis/factorial", experiments="etch,anneal", metric="thickness"
    ).json()
    # When its interaction plot is drawn
    svg = tenant.get(
        f"{BASE}/analysis/factorial.svg", experiments="etch,anneal", metric="thickness"
    ).content.decode()
    groups = svg_groups(svg)
    # Then one bar per cell, on one line per variant of the second experiment
    bars = {}
    for index, anneal in enumerate(["cool", "hot"]):
        paths = list(groups[f"ci-{index}"].iter(f"{SVG_NS}path"))
        assert len(paths) == 2, anneal
        for etch, path in zip(["short", "long"], paths, strict=True):
            y = [float(v) for v in re.findall(r"[-\d.]+", path.get("d"))[1::2]]
            bars[(etch, anneal)] = abs(y[1] - y[0])
    # whose lengths are the t intervals of the cell means (the y axis is linear)
    widths = {}
    for cell in report["cells"]:
        n, std = cell["n"], cell["std"]
        key = (cell["variants"]["etch"], cell["variants"]["anneal"])
        widths[key] = 2 * stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    scale = bars[("short", "cool")] / widths[("short", "cool")]
    for key, length in bars.items():
        assert length == pytest.approx(widths[key] * scale, rel=1e-4), key
    # and the axes say what they show, with the metric's unit
    labels = texts(ElementTree.fromstring(svg))
    assert "mean thickness (mm)" in labels and "etch" in labels
    assert any(label.startswith("bars: 95% confidence interval") for label in labels)
    assert "anneal=cool" in labels and "anneal=hot" in labels
