"""The compiled config of a product: what decide needs to bucket units, cached per version.

Product.config_version is replaced by a new random 63-bit value in the same transaction as
every admin write that changes what decide answers, and decide reads it in the same
statement as the unit's assignments (decide.store.read_units). A compiled config is
therefore immutable for its (product, version) and is cached without any invalidation:

1. worker memory, keyed by product with the version it was compiled at;
2. the shared "decide" cache (Redis; in-process when REDIS_URL is unset) under
   ``config:v{FORMAT_VERSION}:{product_id}:{version}``, holding an *entry*: the product's
   experiments and variants as JSON (orjson), signed with an HMAC of SECRET_KEY;
3. the database: one statement, so the config and its version come from one snapshot.

Why this key can only hold this database's config (random versions, the format version in
the key) and how entries are checked: docs/decide.md, "The config cache". An entry read back
is refused unless its signature is right, it is JSON, it has exactly the shape of
`ConfigEntry` (the types, ranges and uniqueness rules of the database), it names the product
and version of its key, and it compiles. A refused entry, like a Redis error (short socket
timeouts), is counted as ``lab_config_cache_total{result="error"}``, logged with the reason,
and the config is compiled from the database (which then overwrites the entry): slower,
never a 5xx, never a wrong answer. No entry is ever unpickled: nothing read from Redis can
run code. The expiry on the shared entries only collects versions nobody asks for any more.
"""

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from types import MappingProxyType
from typing import Annotated, Literal, Self

import orjson
from django.core import signing
from django.core.cache import caches
from django.db import connection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from decide import metrics
from lab.db import column, table
from lab.models import Design, DesignFactor, Experiment, Layer, Product, Step, Variant
from rules.bucketing import CompiledExperiment, DesignSlot, compile_experiment
from rules.designs import DesignError, Fraction
from rules.keys import KEY_PATTERN
from rules.targeting import (
    ATTRIBUTE_NAME_PATTERN,
    MAX_CONDITIONS,
    LayerSlot,
    Schedule,
    compile_conditions,
)
from rules.vocabulary import Status

logger = logging.getLogger(__name__)

CACHE_ALIAS = "decide"
SHARED_CACHE_TTL_SECONDS = 24 * 3600
MEMORY_MAX_PRODUCTS = 10_000
# The shape of the shared entries. Bump it with any change of `ConfigEntry` (or of what it
# means): it is part of the key, so workers of two releases never read each other's entries.
# 3: experiments carry their targeting (conditions, schedule, layer slot).
# 4: a factor of a design carries its design slot, and every experiment the attribute it
#    randomizes by.
FORMAT_VERSION = 4
_SIGNING_SALT = "lab.decide.config-cache"


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
    # A design's salt -> its enabled factors: a unit's run is stored for all of them at once.
    by_design: Mapping[str, tuple[CompiledExperiment, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )


# --- The entry: plain data, validated like a request body.

_Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
_Key = Annotated[str, Field(pattern=KEY_PATTERN, max_length=64)]
_Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VariantEntry(_Strict):
    id: _Id
    key: _Key
    status: Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]
    weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class LayerEntry(_Strict):
    salt: Annotated[str, Field(min_length=1, max_length=64)]
    start: _Fraction
    end: _Fraction


_Moment = Annotated[float, Field(allow_inf_nan=False)]


class DesignEntry(_Strict):
    salt: Annotated[str, Field(min_length=1, max_length=64)]
    runs: Literal[4, 8, 16, 32, 64, 128]
    column: Annotated[int, Field(ge=1, le=127)]
    low: _Id
    high: _Id
    randomize_by: Annotated[str, Field(min_length=1, max_length=64)] | None


class ExperimentEntry(_Strict):
    id: _Id
    key: _Key
    # Removed experiments are not part of a config.
    status: Literal[Status.ENABLED.value, Status.DISABLED.value]
    salt: Annotated[str, Field(min_length=1, max_length=64)]
    coverage: _Fraction
    step: _Key | None
    # In creation (id) order, the bucketing order; a paused experiment lists none.
    variants: list[VariantEntry]
    # Targeting (docs/decide.md): conditions as the admin API stored them (compiled, hence
    # checked again, by compile_config), the schedule in seconds since the epoch, the slot.
    conditions: Annotated[list[dict], Field(max_length=MAX_CONDITIONS)]
    start_at: _Moment | None
    end_at: _Moment | None
    layer: LayerEntry | None
    design: DesignEntry | None = None
    randomize_by: Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN, max_length=64)] | None

    @model_validator(mode="after")
    def _variants_in_creation_order(self) -> Self:
        ids = [v.id for v in self.variants]
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError("variants must be in strictly increasing id order")
        if len({v.key for v in self.variants}) != len(ids):
            raise ValueError("variant keys must be unique in an experiment")
        if self.status != Status.ENABLED and self.variants:
            raise ValueError("a paused experiment carries no variants")
        return self


class ConfigEntry(_Strict):
    """What the shared cache holds for one (product, version)."""

    format: Literal[FORMAT_VERSION]
    product: _Id
    version: Annotated[int, Field(ge=0, le=2**63 - 1)]
    # In creation (id) order: what "every experiment" means.
    experiments: list[ExperimentEntry]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [e.id for e in self.experiments]
        if any(a >= b for a, b in pairwise(ids)):
            raise ValueError("experiments must be in strictly increasing id order")
        if len({e.key for e in self.experiments}) != len(ids):
            raise ValueError("experiment keys must be unique in a product")
        variant_ids = [v.id for e in self.experiments for v in e.variants]
        if len(set(variant_ids)) != len(variant_ids):
            raise ValueError("a variant belongs to one experiment")
        return self


def compile_config(entry: ConfigEntry) -> ProductConfig:
    """Pure: turn a (valid) entry into a ProductConfig. Raises ValueError if it cannot."""
    experiments: list[CompiledExperiment] = []
    paused: list[str] = []
    for e in entry.experiments:
        if e.status != Status.ENABLED:
            paused.append(e.key)
            continue
        experiments.append(
            compile_experiment(
                id=e.id,
                key=e.key,
                salt=e.salt,
                coverage=e.coverage,
                step_key=e.step,
                variants=[(v.id, v.key, v.status, v.weight) for v in e.variants],
                # Each raises a ValueError (TargetingError) for what the admin API refuses.
                conditions=compile_conditions(e.conditions),
                schedule=(
                    Schedule(e.start_at, e.end_at)
                    if e.start_at is not None or e.end_at is not None
                    else None
                ),
                layer=LayerSlot(e.layer.salt, e.layer.start, e.layer.end) if e.layer else None,
                design=DesignSlot(**e.design.model_dump()) if e.design else None,
                randomize_by=e.randomize_by,
            )
        )
    by_step: dict[str, list[CompiledExperiment]] = {}
    for experiment in experiments:
        if experiment.step_key is not None:
            by_step.setdefault(experiment.step_key, []).append(experiment)
    by_design: dict[str, list[CompiledExperiment]] = {}
    for experiment in experiments:
        if experiment.design is not None:
            by_design.setdefault(experiment.design.salt, []).append(experiment)
    return ProductConfig(
        version=entry.version,
        experiments=tuple(experiments),
        by_key=MappingProxyType({e.key: e for e in experiments}),
        by_step=MappingProxyType({step: tuple(group) for step, group in by_step.items()}),
        paused_keys=tuple(paused),
        by_design=MappingProxyType({salt: tuple(group) for salt, group in by_design.items()}),
    )


# --- The database: one statement.

# One row per variant of an enabled experiment (or one per experiment without any):
# (experiment id, key, status, salt, coverage, step key, conditions, start_at, end_at,
#  layer salt, layer start, layer end, randomize_by, variant id, key, status, weight).
ConfigRow = tuple


@cache
def _load_sql() -> str:
    col = column
    experiment_id, experiment_status = col(Experiment, "id"), col(Experiment, "status")
    return (
        f"SELECT p.{col(Product, 'config_version')}, "
        f"e.{experiment_id}, e.{col(Experiment, 'key')}, e.{experiment_status}, "
        f"e.{col(Experiment, 'salt')}, e.{col(Experiment, 'coverage')}, s.{col(Step, 'key')}, "
        f"e.{col(Experiment, 'conditions')}, e.{col(Experiment, 'start_at')}, "
        f"e.{col(Experiment, 'end_at')}, l.{col(Layer, 'salt')}, "
        f"e.{col(Experiment, 'layer_start')}, e.{col(Experiment, 'layer_end')}, "
        f"e.{col(Experiment, 'randomize_by')}, "
        f"v.{col(Variant, 'id')}, v.{col(Variant, 'key')}, v.{col(Variant, 'status')}, "
        f"v.{col(Variant, 'weight')}, "
        f"d.{col(Design, 'salt')}, d.{col(Design, 'runs')}, d.{col(Design, 'generators')}, "
        f"d.{col(Design, 'randomize_by')}, df.{col(DesignFactor, 'position')}, "
        f"df.{col(DesignFactor, 'low')}, df.{col(DesignFactor, 'high')} "
        f"FROM {table(Product)} p "
        f"LEFT JOIN {table(Experiment)} e "
        f"ON e.{col(Experiment, 'product')} = p.{col(Product, 'id')} "
        f"AND e.{experiment_status} IN (%s, %s) "
        f"LEFT JOIN {table(Step)} s ON s.{col(Step, 'id')} = e.{col(Experiment, 'step')} "
        f"LEFT JOIN {table(Layer)} l ON l.{col(Layer, 'id')} = e.{col(Experiment, 'layer')} "
        f"LEFT JOIN {table(DesignFactor)} df "
        f"ON df.{col(DesignFactor, 'experiment')} = e.{experiment_id} "
        f"AND df.{col(DesignFactor, 'active')} "
        f"LEFT JOIN {table(Design)} d ON d.{col(Design, 'id')} = df.{col(DesignFactor, 'design')} "
        f"LEFT JOIN {table(Variant)} v ON v.{col(Variant, 'experiment')} = e.{experiment_id} "
        f"AND e.{experiment_status} = %s "
        f"WHERE p.{col(Product, 'id')} = %s "
        f"ORDER BY e.{experiment_id}, v.{col(Variant, 'id')}"
    )


def entry_from_rows(product_id: int, version: int, rows: Sequence[ConfigRow]) -> dict:
    """Pure: the entry (as plain data) of the rows `_load_sql` returns, without the version."""
    experiments: list[dict] = []
    for experiment_id, key, status, salt, coverage, step_key, *targeting_and_variant in rows:
        if experiment_id is None:
            continue
        conditions, start_at, end_at, layer_salt, layer_start, layer_end, randomize_by = (
            targeting_and_variant[:7]
        )
        variant = targeting_and_variant[7:11]
        design = targeting_and_variant[11:]
        if not experiments or experiments[-1]["id"] != experiment_id:
            experiments.append(
                {
                    "id": experiment_id,
                    "key": key,
                    "status": status,
                    "salt": salt,
                    "coverage": float(coverage),
                    "step": step_key,
                    "variants": [],
                    "conditions": _json_column(conditions) or [],
                    "start_at": _epoch(start_at),
                    "end_at": _epoch(end_at),
                    "layer": (
                        None
                        if layer_salt is None
                        else {
                            "salt": layer_salt,
                            "start": float(layer_start),
                            "end": float(layer_end),
                        }
                    ),
                    "design": _design_entry(*design) if design and design[0] is not None else None,
                    "randomize_by": randomize_by,
                }
            )
        if variant[0] is not None:
            variant_id, variant_key, variant_status, weight = variant
            experiments[-1]["variants"].append(
                {"id": variant_id, "key": variant_key, "status": variant_status, "weight": weight}
            )
    return {
        "format": FORMAT_VERSION,
        "product": product_id,
        "version": version,
        "experiments": experiments,
    }


def _design_entry(salt, runs, generators, randomize_by, position, low, high) -> dict:
    """The slot of factor ``position`` of a design: its column over the base factors."""
    generators = _json_column(generators) or []
    base = int(runs).bit_length() - 1
    try:
        fraction = Fraction.from_generators(base + len(generators), int(runs), generators)
    except DesignError as exc:
        raise ValueError(f"a design's generators do not make a fraction: {exc}") from exc
    return {
        "salt": salt,
        "runs": int(runs),
        "column": fraction.columns[position],
        "low": low,
        "high": high,
        "randomize_by": randomize_by,
    }


def _json_column(value):
    """A JSON column read by raw SQL: text (Django reads jsonb as text), or already data."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _epoch(value) -> float | None:
    """A timestamp column read by raw SQL (aware datetime; text on SQLite, in UTC) as
    seconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = value.timestamp()
    return seconds if math.isfinite(seconds) else None


def _load(product_id: int, version: int) -> dict:
    """The product's entry, read in one statement: at the version the database holds now
    (`version` if the product does not exist)."""
    with connection.cursor() as cursor:
        cursor.execute(_load_sql(), [Status.ENABLED, Status.DISABLED, Status.ENABLED, product_id])
        rows = cursor.fetchall()
    if rows:
        version = rows[0][0]
    return entry_from_rows(product_id, version, [tuple(row[1:]) for row in rows])


# --- The shared cache: signed JSON bytes, never pickles.


def cache_key(product_id: int, version: int) -> str:
    return f"config:v{FORMAT_VERSION}:{product_id}:{version}"


def _raw_client(shared):
    """The redis-py client behind django-redis (None for another backend). Entries are
    read and written as bytes through it, so django-redis's (pickle) serializer never
    sees them."""
    client = getattr(shared, "client", None)
    return client.get_client(write=True) if hasattr(client, "get_client") else None


def shared_get(key: str):
    """The raw value under `key` in the shared cache (bytes from Redis), or None."""
    shared = caches[CACHE_ALIAS]
    raw_client = _raw_client(shared)
    if raw_client is None:
        return shared.get(key)
    return raw_client.get(shared.make_key(key))


def shared_set(key: str, value: bytes) -> None:
    shared = caches[CACHE_ALIAS]
    raw_client = _raw_client(shared)
    if raw_client is None:
        shared.set(key, value, SHARED_CACHE_TTL_SECONDS)
    else:
        raw_client.set(shared.make_key(key), value, ex=SHARED_CACHE_TTL_SECONDS)


def encode_entry(entry: dict) -> bytes:
    """An entry as stored: its JSON, signed (`<json>:<signature>`, django.core.signing)."""
    payload = orjson.dumps(entry).decode()
    return signing.Signer(salt=_SIGNING_SALT).sign(payload).encode()


class RejectedEntry(Exception):
    """A shared-cache entry that is not a valid config for its key (why: the message)."""


def decode_entry(raw, product_id: int, version: int) -> ProductConfig:
    """The config in a shared-cache entry read under (product_id, version); raises
    RejectedEntry for anything else."""
    if not isinstance(raw, bytes):
        raise RejectedEntry(f"not bytes but {type(raw).__name__}")
    try:
        payload = signing.Signer(salt=_SIGNING_SALT).unsign(raw.decode())
    except (UnicodeDecodeError, signing.BadSignature) as exc:
        raise RejectedEntry("bad signature") from exc
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RejectedEntry(f"not JSON: {exc}") from exc
    try:
        entry = ConfigEntry.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise RejectedEntry(f"not a format-{FORMAT_VERSION} entry: {exc}") from exc
    if (entry.product, entry.version) != (product_id, version):
        raise RejectedEntry(
            f"holds product {entry.product} at version {entry.version}, not its key's"
        )
    try:
        return compile_config(entry)
    except ValueError as exc:
        raise RejectedEntry(f"does not compile: {exc}") from exc


def _from_database(product_id: int, version: int, *, share: bool) -> ProductConfig:
    entry = _load(product_id, version)
    config = compile_config(ConfigEntry.model_validate(entry))
    if share:
        try:
            shared_set(cache_key(product_id, config.version), encode_entry(entry))
        except Exception as exc:
            metrics.cache_error.inc()
            logger.warning("config cache unavailable, not storing: %r", exc)
    return config


# --- Worker memory.

_memory: dict[int, ProductConfig] = {}


def _remember(product_id: int, config: ProductConfig) -> None:
    if product_id not in _memory and len(_memory) >= MEMORY_MAX_PRODUCTS:
        _memory.pop(next(iter(_memory)))
    _memory[product_id] = config


def clear_memory() -> None:
    _memory.clear()


def remembered(product_id: int, version: int) -> ProductConfig | None:
    """The compiled config of `product_id` at `version` if this worker holds it, else None
    (never asks Redis or the database)."""
    config = _memory.get(product_id)
    return config if config is not None and config.version == version else None


def get_config(
    product_id: int, version: int, *, distrusted: ProductConfig | None = None
) -> ProductConfig:
    """The compiled config of `product_id` at `version` (or a later one).

    `version` is the one just read from the database with the request's assignments. Only a
    compile from the database may return another version (a write committed in between); it
    is as good, since it only reflects writes committed since.

    `distrusted`: a config the database just contradicted (decide.decisions); it is
    dropped, counted as an error, and replaced by a compile from the database.
    """
    if distrusted is not None:
        metrics.cache_error.inc()
        logger.warning(
            "config of product %s at version %s disagrees with the database; recompiling",
            product_id,
            distrusted.version,
        )
        _memory.pop(product_id, None)
        config = _from_database(product_id, version, share=True)
        _remember(product_id, config)
        return config

    config = _memory.get(product_id)
    if config is not None and config.version == version:
        return config

    key = cache_key(product_id, version)
    try:
        raw = shared_get(key)
    except Exception as exc:
        metrics.cache_error.inc()
        logger.warning("config cache unavailable, compiling from the database: %r", exc)
        config = _from_database(product_id, version, share=False)
    else:
        config = None
        if raw is None:
            metrics.cache_miss.inc()
        else:
            try:
                config = decode_entry(raw, product_id, version)
            except Exception as exc:
                metrics.cache_error.inc()
                logger.warning(
                    "config cache entry %s refused, compiling from the database: %s", key, exc
                )
            else:
                metrics.cache_hit.inc()
        if config is None:
            config = _from_database(product_id, version, share=True)
    _remember(product_id, config)
    return config
