"""SVG pictures of the analyses, drawn with matplotlib's object API.

Each function takes figures already computed (aggregates from the database: histogram
counts, cell means and spreads, chart limits; the control chart's points) and returns the SVG
text. Every picture is a ``Figure`` of its own, saved by the SVG canvas savefig gives it: no
pyplot state is shared between requests or threads. Text stays text (``svg.fonttype``
``none``): labels are searchable in a browser, and tests read them from the SVG. The groups a
reader (or a test) looks for carry ids: ``individuals`` and ``moving-range`` (the panels of the
control chart) with ``individual-points`` and ``moving-range-points`` (one marker per point),
``ci-<n>`` (the interval bars of the interaction plot, one per line).
docs/results.md §13 shows how to fetch, open and embed them.
"""

from __future__ import annotations

import io
import itertools
import math

import matplotlib
from matplotlib.figure import Figure
from scipy import stats

# Interval bars of the interaction plot: this confidence for each cell mean.
CONFIDENCE = 0.95

# The SVG writer reads these when it draws, and has no per-figure option for them. Set once
# for the process and never changed: a temporary rc_context around each savefig would be
# shared state again between threads. A fixed hash salt makes the ids of clip paths the same
# on every drawing, so one picture is the same bytes whichever way it is asked for.
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "lab"


def svg_text(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buffer.getvalue()


def with_unit(label: str, unit: str | None) -> str:
    return f"{label} ({unit})" if unit else label


def _spec_lines(axes, lower, nominal, upper, *, vertical: bool) -> None:
    line = axes.axvline if vertical else axes.axhline
    for value, label, style in (
        (lower, "LSL", "--"),
        (nominal, "nominal", ":"),
        (upper, "USL", "--"),
    ):
        if value is not None and math.isfinite(value):
            line(
                value,
                color="firebrick" if label != "nominal" else "dimgray",
                linestyle=style,
                linewidth=1.2,
                label=f"{label} {value:g}",
            )


def _finish(axes, title: str | None = None) -> None:
    if title is not None:
        axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)


def _no_data(axes) -> None:
    axes.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=axes.transAxes)


def distributions_svg(
    *,
    title: str,
    edges: list[float],
    counts: dict[str, list[int]],
    lower: float | None,
    nominal: float | None,
    upper: float | None,
    unit: str | None = None,
) -> str:
    """Per-variant histograms (share of the variant's units per bin) against the limits."""
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    for variant, bins in counts.items() if edges else ():
        total = sum(bins) or 1
        shares = [c / total for c in bins]
        axes.stairs(shares, edges, label=f"{variant} (n={sum(bins)})", linewidth=1.6)
    _spec_lines(axes, lower, nominal, upper, vertical=True)
    if not edges:
        _no_data(axes)
    axes.set_xlabel(with_unit("value", unit))
    axes.set_ylabel("share of units per bin")
    _finish(axes, title)
    return svg_text(figure)


def moving_ranges(values: list[float]) -> list[float]:
    """|x_i − x_{i−1}| for each point after the first (NaN where it would overflow)."""
    ranges = []
    for previous, current in itertools.pairwise(values):
        difference = abs(current - previous)
        ranges.append(difference if math.isfinite(difference) else math.nan)
    return ranges


def control_chart_svg(
    *, title: str, values: list[float], chart: dict, first_index: int, unit: str | None = None
) -> str:
    """The I-MR chart: individuals above (points in order, center, control limits, points
    beyond the limits in red), their moving ranges below (mean moving range and its upper
    limit D4·mr_bar; the lower limit of a moving range is 0)."""
    figure = Figure(figsize=(9, 7))
    individuals, ranges = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.12}
    )
    individuals.set_gid("individuals")
    ranges.set_gid("moving-range")
    positions = list(range(first_index + 1, first_index + len(values) + 1))
    individuals.plot(
        positions,
        values,
        marker="o",
        markersize=3,
        linewidth=0.8,
        color="steelblue",
        gid="individual-points",
    )
    lcl, ucl, center = chart.get("lcl"), chart.get("ucl"), chart.get("center")
    if lcl is not None and ucl is not None:
        outside = [(i, v) for i, v in zip(positions, values, strict=True) if v < lcl or v > ucl]
        if outside:
            xs, ys = zip(*outside, strict=True)
            individuals.scatter(xs, ys, color="red", zorder=3, s=24, label="beyond the limits")
        individuals.axhline(ucl, color="firebrick", linestyle="--", label=f"UCL {ucl:.6g}")
        individuals.axhline(lcl, color="firebrick", linestyle="--", label=f"LCL {lcl:.6g}")
    if center is not None:
        individuals.axhline(center, color="dimgray", label=f"center {center:.6g}")
    if not values:
        _no_data(individuals)
    individuals.set_ylabel(with_unit("individual value", unit))
    _finish(individuals, title)

    mr = moving_ranges(values)
    if mr:
        ranges.plot(
            positions[1:],
            mr,
            marker="o",
            markersize=3,
            linewidth=0.8,
            color="seagreen",
            gid="moving-range-points",
        )
    mr_bar, mr_ucl = chart.get("mr_bar"), chart.get("mr_ucl")
    if mr_ucl is not None:
        ranges.axhline(mr_ucl, color="firebrick", linestyle="--", label=f"UCL {mr_ucl:.6g}")
    if mr_bar is not None:
        ranges.axhline(mr_bar, color="dimgray", label=f"mean MR {mr_bar:.6g}")
    if mr_bar is not None or mr:
        ranges.axhline(0.0, color="firebrick", linestyle="--", linewidth=0.8, label="LCL 0")
    ranges.set_xlabel("measurement (in order of measured_at)")
    ranges.set_ylabel(with_unit("moving range", unit))
    _finish(ranges)
    return svg_text(figure)


def mean_interval(cell: dict, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The t interval of a cell's mean (mean ± t(n − 1)·std/√n), or None with fewer than two
    units or no spread to speak of."""
    n, mean, std = cell.get("n") or 0, cell.get("mean"), cell.get("std")
    if n < 2 or mean is None or std is None:
        return None
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    if not math.isfinite(half):
        return None
    return mean - half, mean + half


def interaction_svg(*, title: str, report: dict, unit: str | None = None) -> str:
    """Interaction plot: cell means against the levels of the first experiment, one line per
    combination of the levels of the others, each mean with its 95 % t interval."""
    experiments = report["experiments"]
    first, others = experiments[0], experiments[1:]
    figure = Figure(figsize=(8, 4.5))
    axes = figure.add_subplot()
    first_levels = list(dict.fromkeys(cell["variants"][first] for cell in report["cells"]))
    groups: dict[tuple, list[dict]] = {}
    for cell in report["cells"]:
        groups.setdefault(tuple(cell["variants"][e] for e in others), []).append(cell)
    # Lines side by side, a little apart, so that the bars of equal levels do not hide each other.
    offset_step = 0.06 if len(groups) > 1 else 0.0
    for index, (group, cells) in enumerate(groups.items()):
        by_level = {cell["variants"][first]: cell for cell in cells}
        offset = (index - (len(groups) - 1) / 2) * offset_step
        xs = [position + offset for position in range(len(first_levels))]
        means = [(by_level.get(level) or {}).get("mean") for level in first_levels]
        label = ", ".join(f"{e}={v}" for e, v in zip(others, group, strict=True)) or "mean"
        (line,) = axes.plot(
            xs, [m if m is not None else math.nan for m in means], marker="o", label=label
        )
        bars = [
            (x, interval)
            for x, level in zip(xs, first_levels, strict=True)
            if (interval := mean_interval(by_level.get(level) or {})) is not None
        ]
        if bars:
            bar_xs = [x for x, _ in bars]
            lows = [low for _, (low, _high) in bars]
            highs = [high for _, (_low, high) in bars]
            collection = axes.vlines(bar_xs, lows, highs, color=line.get_color(), linewidth=1.2)
            collection.set_gid(f"ci-{index}")
            axes.scatter(
                bar_xs * 2, lows + highs, marker="_", s=60, color=line.get_color(), linewidths=1.2
            )
    axes.set_xticks(range(len(first_levels)), first_levels)
    axes.set_xlabel(first)
    axes.set_ylabel(with_unit(f"mean {report['metric']}", unit))
    axes.text(
        0.0,
        -0.16,
        f"bars: {CONFIDENCE:.0%} confidence interval of each cell mean (t, n − 1 df)",
        transform=axes.transAxes,
        fontsize="small",
        color="dimgray",
    )
    _finish(axes, title)
    return svg_text(figure)
