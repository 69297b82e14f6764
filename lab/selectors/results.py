"""The results report is an analysis: it lives in ``lab.analysis.results``."""

from lab.analysis.results import experiment_results

__all__ = ["experiment_results"]
