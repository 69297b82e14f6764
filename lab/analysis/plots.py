"""SVG pictures of the analyses, drawn with matplotlib's Agg backend (no display needed).

Each function takes figures already computed (aggregates from the database: histogram
counts, cell means, chart limits; the control chart's points) and returns the SVG text.
docs/results.md §13 shows how to fetch and embed them.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never to a screen

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

_SVG_OPTIONS = {"format": "svg", "bbox_inches": "tight", "metadata": {"Date": None}}


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, **_SVG_OPTIONS)
    plt.close(figure)
    return buffer.getvalue()


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


def distributions_svg(
    *,
    title: str,
    edges: list[float],
    counts: dict[str, list[int]],
    lower: float | None,
    nominal: float | None,
    upper: float | None,
) -> str:
    """Per-variant histograms (share of the variant's units per bin) against the limits."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for variant, bins in counts.items() if edges else ():
        total = sum(bins) or 1
        shares = [c / total for c in bins]
        axes.stairs(shares, edges, label=f"{variant} (n={sum(bins)})", linewidth=1.6)
    _spec_lines(axes, lower, nominal, upper, vertical=True)
    if not edges:
        axes.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel("value")
    axes.set_ylabel("share of units per bin")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return _svg(figure)


def control_chart_svg(*, title: str, values: list[float], chart: dict, first_index: int) -> str:
    """Individuals chart: the points in order, the center and the control limits, and the
    points beyond the limits marked in red."""
    figure, axes = plt.subplots(figsize=(9, 4.5))
    positions = list(range(first_index + 1, first_index + len(values) + 1))
    axes.plot(positions, values, marker="o", markersize=3, linewidth=0.8, color="steelblue")
    lcl, ucl, center = chart.get("lcl"), chart.get("ucl"), chart.get("center")
    if lcl is not None and ucl is not None:
        outside = [(i, v) for i, v in zip(positions, values, strict=True) if v < lcl or v > ucl]
        if outside:
            xs, ys = zip(*outside, strict=True)
            axes.scatter(xs, ys, color="red", zorder=3, s=24, label="beyond the limits")
        axes.axhline(ucl, color="firebrick", linestyle="--", label=f"UCL {ucl:.6g}")
        axes.axhline(lcl, color="firebrick", linestyle="--", label=f"LCL {lcl:.6g}")
    if center is not None:
        axes.axhline(center, color="dimgray", label=f"center {center:.6g}")
    if not values:
        axes.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(title)
    axes.set_xlabel("measurement (in order of measured_at)")
    axes.set_ylabel("value")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return _svg(figure)


def interaction_svg(*, title: str, report: dict) -> str:
    """Interaction plot: cell means against the levels of the first experiment, one line per
    combination of the levels of the others."""
    experiments = report["experiments"]
    first, others = experiments[0], experiments[1:]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    first_levels = list(dict.fromkeys(cell["variants"][first] for cell in report["cells"]))
    groups: dict[tuple, list[dict]] = {}
    for cell in report["cells"]:
        groups.setdefault(tuple(cell["variants"][e] for e in others), []).append(cell)
    for group, cells in groups.items():
        by_level = {cell["variants"][first]: cell["mean"] for cell in cells}
        means = [by_level.get(level) for level in first_levels]
        label = ", ".join(f"{e}={v}" for e, v in zip(others, group, strict=True)) or "mean"
        axes.plot(
            range(len(first_levels)),
            [m if m is not None else math.nan for m in means],
            marker="o",
            label=label,
        )
    axes.set_xticks(range(len(first_levels)), first_levels)
    axes.set_xlabel(first)
    axes.set_ylabel(f"mean {report['metric']}")
    axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    return _svg(figure)
