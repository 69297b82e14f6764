"""The Prometheus metrics of the decide API.

Every label takes its value from a fixed set written here (never a product, experiment or
unit key), so the number of series stays bounded whatever tenants do. Under gunicorn the
values live in PROMETHEUS_MULTIPROC_DIR (set up by gunicorn.conf.py) and /metrics sums
them over every worker.
"""

import time
from collections.abc import Callable
from functools import wraps

from prometheus_client import Counter, Histogram

ENDPOINTS = ("decide", "batch", "ofrep")
OUTCOMES = (
    "ok",
    "not_modified",
    "bad_request",
    "unauthorized",
    "not_found",
    "too_large",
    "unavailable",
    "error",
)
CACHE_RESULTS = ("hit", "miss", "error")

# Sub-millisecond resolution where a warm decision lives, then up to the statement timeout.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

decide_requests = Counter(
    "lab_decide_requests",
    "Decide API requests by endpoint and outcome.",
    ["endpoint", "outcome"],
)
decide_duration = Histogram(
    "lab_decide_duration_seconds",
    "Time to answer a decide API request, from authentication to the rendered response.",
    ["endpoint"],
    buckets=DURATION_BUCKETS,
)
assignments_created = Counter(
    "lab_assignments_created",
    "Assignments stored by decide (first decisions for a unit and an experiment).",
)
assignments_rebucketed = Counter(
    "lab_assignments_rebucketed",
    "Assignments moved off a removed variant by decide.",
)
config_cache = Counter(
    "lab_config_cache",
    "Shared (Redis) cache lookups of compiled product configs on a worker-memory miss.",
    ["result"],
)
known_units = Counter(
    "lab_known_units",
    "Single-unit decisions looked up in the worker's memory of known units (decide.memory): "
    "hit, answered without the database; miss, answered by the database.",
    ["result"],
)
known_units_invalidations = Counter(
    "lab_known_units_invalidations",
    "Notifications applied to the memory of known units: scope all (everything forgotten), "
    "product (a product's entries forgotten, counted one by one) or unit (units forgotten, "
    "counted one by one).",
    ["scope"],
)
known_units_learnt = Counter(
    "lab_known_units_learnt",
    "Units the memory of known units learnt from another decision's notification (decide's "
    "first decisions say what they stored, decide.memory.listener): kind new (a unit that "
    "decision created) or added (assignments added to a unit this worker held).",
    ["kind"],
)
known_units_evictions = Counter(
    "lab_known_units_evictions",
    "Entries evicted from the memory of known units, least recently used first, to stay "
    "within its byte budget (limit bytes) or its count of units (limit entries).",
    ["limit"],
)

# Children resolved once: the hot path does no label lookups, and every series exists at 0.
_requests = {(e, o): decide_requests.labels(e, o) for e in ENDPOINTS for o in OUTCOMES}
_durations = {e: decide_duration.labels(e) for e in ENDPOINTS}
cache_hit, cache_miss, cache_error = (config_cache.labels(r) for r in CACHE_RESULTS)
known_hit, known_miss = (known_units.labels(r) for r in ("hit", "miss"))
known_invalidated_all, known_invalidated_products, known_invalidated_units = (
    known_units_invalidations.labels(s) for s in ("all", "product", "unit")
)
known_learnt_new, known_learnt_added = (known_units_learnt.labels(k) for k in ("new", "added"))
known_evictions = {limit: known_units_evictions.labels(limit) for limit in ("bytes", "entries")}

_OUTCOME_BY_STATUS = {
    304: "not_modified",
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    413: "too_large",
    422: "bad_request",
    503: "unavailable",
}


def outcome_of(status_code: int) -> str:
    if 200 <= status_code < 300:
        return "ok"
    return _OUTCOME_BY_STATUS.get(status_code) or ("bad_request" if status_code < 500 else "error")


def record(endpoint: str, status_code: int, started: float) -> None:
    """Count and time one answer (`started`: its time.perf_counter())."""
    _durations[endpoint].observe(time.perf_counter() - started)
    _requests[endpoint, outcome_of(status_code)].inc()


def observed(endpoint: str) -> Callable:
    """Wrap a ninja operation's `run` (see ninja.decorators.decorate_view): counts and times
    every answer, including those ninja gives before the view runs (auth, parsing)."""

    def decorator(run: Callable) -> Callable:
        @wraps(run)
        def wrapper(request, *args, **kwargs):
            started = time.perf_counter()
            status = 500
            try:
                response = run(request, *args, **kwargs)
                status = response.status_code
                return response
            finally:
                record(endpoint, status, started)

        return wrapper

    return decorator
