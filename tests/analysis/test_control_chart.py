"""Control charts: GET .../experiments/{e}/control-chart?metric=m (docs/results.md §12).

Reference: NIST/SEMATECH e-Handbook §6.3.2.2, the individuals chart example (ten batches):
center 50.81, mean moving range 1.8778, UCL 55.8041, LCL 45.8159, MR UCL 6.1347.
"""

import itertools
from datetime import timedelta

import pytest

from tests.analysis.builders import T0

CHART = "/products/widget/experiments/line/control-chart"
HANDBOOK = [49.6, 47.6, 49.9, 51.3, 47.8, 51.2, 52.6, 52.4, 53.6, 52.1]


def test_control_chart__nist_handbook_example__limits(tenant, plant):
    # Given the handbook's ten batches, measured in order (inserted shuffled)
    plant.experiment("line", ["a", "b"])
    plant.metric("y")
    order = [3, 0, 9, 5, 1, 8, 2, 7, 4, 6]
    plant.units(
        [{"line": "a"}] * 10,
        {"y": [HANDBOOK[i] for i in order]},
        times=[T0 + timedelta(hours=i) for i in order],
    )
    # When
    response = tenant.get(CHART, metric="y")
    # Then
    assert response.status_code == 200, response.content
    report = response.json()
    chart = report["variants"]["a"]
    assert chart["n"] == 10
    assert chart["center"] == pytest.approx(50.81, rel=1e-15)
    assert chart["mr_bar"] == pytest.approx(16.9 / 9, rel=1e-13)
    assert chart["ucl"] == pytest.approx(55.8041, abs=5e-5)
    assert chart["lcl"] == pytest.approx(45.8159, abs=5e-5)
    assert chart["mr_ucl"] == pytest.approx(6.1347, abs=5e-5)
    assert chart["beyond_limits"] == 0
    # below, below, below, above, below, above ×5: the longest run is 5 points above
    assert chart["longest_run"] == 5
    assert chart["stable"] is True
    # A variant without measurements has an empty chart (and still a link to its picture)
    empty = dict(report["variants"]["b"])
    assert empty.pop("plot_url").startswith("http://testserver/api/admin/v1/plots/")
    assert empty == {
        "n": 0,
        "center": None,
        "mr_bar": None,
        "ucl": None,
        "lcl": None,
        "mr_ucl": None,
        "beyond_limits": None,
        "longest_run": None,
        "stable": None,
    }


def test_control_chart__shift_and_outlier__not_stable(tenant, plant):
    # Given a: 12 points below then 12 above the center (a shift: a run of 12);
    # b: steady noise and one far outlier at the end
    shift = [10.0 + 0.01 * (i % 3) for i in range(12)] + [10.2 + 0.01 * (i % 3) for i in range(12)]
    outlier = [5.0, 5.1, 4.9, 5.05, 4.95] * 4 + [9.0]
    plant.experiment("line", ["a", "b"])
    plant.metric("y")
    plant.units([{"line": "a"}] * len(shift), {"y": shift})
    plant.units([{"line": "b"}] * len(outlier), {"y": outlier})
    charts = tenant.get(CHART, metric="y").json()["variants"]
    assert charts["a"]["longest_run"] == 12
    assert charts["a"]["stable"] is False
    assert charts["b"]["beyond_limits"] == 1
    # The outlier lifts the center above all 20 other points: a run of 20 below it
    assert charts["b"]["longest_run"] == 20
    assert charts["b"]["stable"] is False


def test_control_chart__ties_in_time__ordered_by_unit_key(tenant, plant):
    # Given the same measured_at for all: the order is by unit key, so MR follows the keys
    plant.experiment("line", ["a"])
    plant.metric("y")
    plant.units(
        [{"line": "a"}] * 4,
        {"y": [1.0, 5.0, 2.0, 3.0]},
        keys=["SN-3", "SN-1", "SN-4", "SN-2"],
        times=[T0] * 4,
    )
    # In key order: 5 (SN-1), 3 (SN-2), 1 (SN-3), 2 (SN-4): ranges 2, 2, 1
    chart = tenant.get(CHART, metric="y").json()["variants"]["a"]
    assert chart["mr_bar"] == pytest.approx(5 / 3, rel=1e-15)


def test_control_chart__offset_1e9_and_huge_values__exact_and_finite(tenant, plant):
    plant.experiment("line", ["a", "b"])
    plant.metric("y")
    offsets = [0.001, 0.003, 0.002, 0.004]
    plant.units([{"line": "a"}] * 4, {"y": [1e9 + d for d in offsets]})
    plant.units([{"line": "b"}] * 3, {"y": [1.7e308, -1.7e308, 1.7e308]})
    charts = tenant.get(CHART, metric="y").json()["variants"]
    values = [1e9 + d for d in offsets]
    ranges = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert charts["a"]["mr_bar"] == pytest.approx(sum(ranges) / 3, rel=1e-15)
    # |1.7e308 − (−1.7e308)| does not fit a double: null, never an error
    assert charts["b"]["n"] == 3
    assert charts["b"]["mr_bar"] is None


def test_control_chart__unknown_metric_or_other_tenant__404(tenant, other_tenant, plant):
    plant.experiment("line", ["a"])
    plant.metric("y")
    assert tenant.get(CHART, metric="nope").status_code == 404
    assert other_tenant.get(CHART, metric="y").status_code == 404
    assert tenant.get(CHART).status_code == 422
