"""The compiled config of a product: what decide needs to bucket units, cached per version.

Product.config_version is bumped in the same transaction as every admin write that changes
what decide answers, and decide reads it in the same statement as the unit's assignments
(decide.store.read_units). A compiled config is therefore immutable for its
(product, version) and is cached without any invalidation:

1. worker memory, keyed by product with the version it was compiled at;
2. the shared "decide" cache (Redis through django-redis; in-process when REDIS_URL is
   unset) under ``config:{product_id}:{version}``, holding the raw database rows;
3. the database: one statement, so the config and its version come from one snapshot.

A Redis error (short socket timeouts) is counted as ``lab_config_cache_total{result="error"}``
and the config is compiled from the database: slower, never a 5xx, never stale. The expiry
on the shared entries only collects versions nobody asks for any more.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType

from django.core.cache import caches
from django.db import connection

from decide import metrics
from decide.engine import CompiledExperiment, compile_experiment
from lab.models import Experiment, Product, Status, Step, Variant

logger = logging.getLogger(__name__)

CACHE_ALIAS = "decide"
SHARED_CACHE_TTL_SECONDS = 24 * 3600
MEMORY_MAX_PRODUCTS = 10_000


@dataclass(frozen=True, slots=True)
class ProductConfig:
    """Everything decide needs about a product's experiments at one config version."""

    version: int
    # Enabled experiments in creation order: what "every experiment" means.
    experiments: tuple[CompiledExperiment, ...]
    by_key: Mapping[str, CompiledExperiment]
    by_step: Mapping[str, tuple[CompiledExperiment, ...]]
    # Disabled (paused) experiments: known, answered with no variant.
    paused_keys: tuple[str, ...]


# One row per variant of an enabled experiment (or one per experiment without any):
# (experiment id, key, status, salt, coverage, step key, variant id, key, status, weight).
ConfigRow = tuple


def compile_config(version: int, rows: Sequence[ConfigRow]) -> ProductConfig:
    """Pure: turn the rows of `_load_rows` into a ProductConfig."""
    experiments: list[CompiledExperiment] = []
    paused: list[str] = []
    current: tuple | None = None
    variants: list[tuple[int, str, str, float]] = []

    def flush() -> None:
        if current is None:
            return
        experiment_id, key, status, salt, coverage, step_key = current
        if status == Status.ENABLED:
            experiments.append(
                compile_experiment(
                    id=experiment_id,
                    key=key,
                    salt=salt,
                    coverage=coverage,
                    step_key=step_key,
                    variants=variants,
                )
            )
        else:
            paused.append(key)

    for experiment_id, key, status, salt, coverage, step_key, *variant in rows:
        if experiment_id is None:
            continue
        if current is None or current[0] != experiment_id:
            flush()
            current = (experiment_id, key, status, salt, float(coverage), step_key)
            variants = []
        if variant[0] is not None:
            variant_id, variant_key, variant_status, weight = variant
            variants.append((variant_id, variant_key, variant_status, float(weight)))
    flush()

    by_step: dict[str, list[CompiledExperiment]] = {}
    for experiment in experiments:
        if experiment.step_key is not None:
            by_step.setdefault(experiment.step_key, []).append(experiment)
    return ProductConfig(
        version=version,
        experiments=tuple(experiments),
        by_key=MappingProxyType({e.key: e for e in experiments}),
        by_step=MappingProxyType({step: tuple(group) for step, group in by_step.items()}),
        paused_keys=tuple(paused),
    )


@cache
def _load_sql() -> str:
    q = connection.ops.quote_name

    def table(model) -> str:
        return q(model._meta.db_table)

    def col(model, field: str) -> str:
        return q(model._meta.get_field(field).column)

    experiment_id, experiment_status = col(Experiment, "id"), col(Experiment, "status")
    return (
        f"SELECT p.{col(Product, 'config_version')}, "
        f"e.{experiment_id}, e.{col(Experiment, 'key')}, e.{experiment_status}, "
        f"e.{col(Experiment, 'salt')}, e.{col(Experiment, 'coverage')}, s.{col(Step, 'key')}, "
        f"v.{col(Variant, 'id')}, v.{col(Variant, 'key')}, v.{col(Variant, 'status')}, "
        f"v.{col(Variant, 'weight')} "
        f"FROM {table(Product)} p "
        f"LEFT JOIN {table(Experiment)} e "
        f"ON e.{col(Experiment, 'product')} = p.{col(Product, 'id')} "
        f"AND e.{experiment_status} IN (%s, %s) "
        f"LEFT JOIN {table(Step)} s ON s.{col(Step, 'id')} = e.{col(Experiment, 'step')} "
        f"LEFT JOIN {table(Variant)} v ON v.{col(Variant, 'experiment')} = e.{experiment_id} "
        f"AND e.{experiment_status} = %s "
        f"WHERE p.{col(Product, 'id')} = %s "
        f"ORDER BY e.{experiment_id}, v.{col(Variant, 'id')}"
    )


def _load_rows(product_id: int) -> tuple[int | None, list[ConfigRow]]:
    """The product's config rows and the version they are at, read in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_load_sql(), [Status.ENABLED, Status.DISABLED, Status.ENABLED, product_id])
        rows = cursor.fetchall()
    if not rows:
        return None, []
    return rows[0][0], [tuple(row[1:]) for row in rows]


_memory: dict[int, ProductConfig] = {}


def _remember(product_id: int, config: ProductConfig) -> None:
    if product_id not in _memory and len(_memory) >= MEMORY_MAX_PRODUCTS:
        _memory.pop(next(iter(_memory)))
    _memory[product_id] = config


def clear_memory() -> None:
    _memory.clear()


def cache_key(product_id: int, version: int) -> str:
    return f"config:{product_id}:{version}"


def get_config(product_id: int, version: int) -> ProductConfig:
    """The compiled config of `product_id` at `version` (or later, never earlier).

    `version` is the one just read from the database with the request's assignments. Only a
    compile from the database may return a later version (a write committed in between); it
    is as good, since it only reflects writes committed since.
    """
    config = _memory.get(product_id)
    if config is not None and config.version == version:
        return config

    shared = caches[CACHE_ALIAS]
    shared_ok = True
    rows = None
    try:
        rows = shared.get(cache_key(product_id, version))
    except Exception as exc:
        shared_ok = False
        metrics.cache_error.inc()
        logger.warning("config cache unavailable, compiling from the database: %r", exc)

    if rows is not None:
        metrics.cache_hit.inc()
        config = compile_config(version, rows)
    else:
        if shared_ok:
            metrics.cache_miss.inc()
        loaded_version, rows = _load_rows(product_id)
        loaded_version = version if loaded_version is None else loaded_version
        config = compile_config(loaded_version, rows)
        if shared_ok:
            try:
                shared.set(cache_key(product_id, loaded_version), rows, SHARED_CACHE_TTL_SECONDS)
            except Exception as exc:
                metrics.cache_error.inc()
                logger.warning("config cache unavailable, not storing: %r", exc)
    _remember(product_id, config)
    return config
