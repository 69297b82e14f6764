"""The statistics of the results report; they live in ``lab.analysis.statistics``."""

from lab.analysis.statistics import *  # noqa: F403
from lab.analysis.statistics import __all__  # noqa: F401
