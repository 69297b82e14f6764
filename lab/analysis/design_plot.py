"""The half-normal plot of a design's effects (docs/designs.md), drawn with matplotlib's
object API (a ``Figure`` of its own, no pyplot state shared between requests)."""

from __future__ import annotations

from matplotlib.figure import Figure
from scipy import stats

from lab.analysis.plots import svg_text


def half_normal_svg(*, title: str, report: dict) -> str:
    """|effect| against half-normal quantiles, every point labelled with its term; the margin
    of error (Lenth) as a line when the design is unreplicated."""
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    effects = report.get("effects") or []
    ordered = sorted(effects, key=lambda row: abs(row["effect"]))
    m = len(ordered)
    quantiles = [float(stats.halfnorm.ppf((i + 0.5) / m)) for i in range(m)]
    for row, q in zip(ordered, quantiles, strict=True):
        strong = row.get("active") or (row.get("p_value") is not None and row["p_value"] < 0.05)
        axes.scatter(abs(row["effect"]), q, color="firebrick" if strong else "steelblue", s=24)
        axes.annotate(
            row["term"],
            (abs(row["effect"]), q),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=8,
        )
    if report.get("margin_of_error") is not None:
        axes.axvline(
            report["margin_of_error"],
            color="dimgray",
            linestyle="--",
            linewidth=1,
            label=f"Lenth margin of error {report['margin_of_error']:.4g}",
        )
        axes.legend(loc="lower right", fontsize=8)
    if not m:
        axes.text(
            0.5,
            0.5,
            report.get("note") or "no effect to plot",
            ha="center",
            va="center",
            transform=axes.transAxes,
            wrap=True,
        )
    axes.set_xlabel("|effect|")
    axes.set_ylabel("half-normal quantile")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    return svg_text(figure)
