"""Characterization analysis: what engineers read about their process.

- ``moments``: per-group count, exact mean, sum of squared deviations, extremes — aggregated in
  the database in two statements, exact to what doubles allow whatever the offset or scale.
- ``spec``: the in-spec rule (closed limits, a missing limit unbounded), defined once.
- ``statistics``: the pure statistics (no Django): description, capability and its intervals,
  Welch, proportions, SRM, multiple-comparison corrections.
- ``results``: the results report of one experiment.
- ``factorial``: Type III ANOVA across experiments that share units, from per-cell aggregates.
- ``control_chart``: individuals / moving-range charts.
- ``plots``: the SVG pictures of the three analyses.
- ``export``: the one-row-per-unit CSV export.

Definitions and how to read every figure: ``docs/results.md``.
"""
