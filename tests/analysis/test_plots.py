"""The SVG plots render in a real browser (headless Chromium) and are not blank."""

import itertools

import pytest

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
