"""The compiled-config cache: worker memory and the shared "decide" cache, keyed by version,
never stale, and failing open to the database when Redis is unreachable."""

import copy

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from prometheus_client import REGISTRY

from decide import config
from decide.config import (
    ConfigEntry,
    cache_key,
    compile_config,
    entry_from_rows,
    get_config,
    shared_get,
)
from lab.models import Product
from tests.conftest import requires_redis
from tests.decide.conftest import expected_variant, make_experiment, variant


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("lab_config_cache_total", {"result": result}) or 0.0


@pytest.fixture
def counts():
    before = {r: cache_count(r) for r in ("hit", "miss", "error")}
    return lambda: {r: cache_count(r) - before[r] for r in before}


def _version(product: Product) -> int:
    product.refresh_from_db()
    return product.config_version


def test_config__compiled_once_per_version_then_served_from_memory(decider, counts):
    make_experiment(decider.product, "etch")
    for i in range(5):
        decider.decide(f"SN-{i}")
    assert counts() == {"hit": 0, "miss": 1, "error": 0}


def test_config__fresh_worker__served_from_shared_cache(decider, counts, django_assert_num_queries):
    # Given a config compiled by another worker (then this worker's memory is empty)
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    config.clear_memory()
    # Then this worker takes it from the shared cache, without compiling it again
    with django_assert_num_queries(1):
        decider.decide("SN-1")
    assert counts() == {"hit": 1, "miss": 1, "error": 0}
    stored = shared_get(cache_key(decider.product.id, _version(decider.product)))
    assert stored is not None


def test_config__admin_change__next_decide_recompiles(decider, counts):
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    decider.decide("SN-1")
    # When a variant is closed (the admin write bumps the version)
    decider.change(variant(etch, "b"), status="disabled")
    # Then the very next decision uses the new config
    assert {decider.decide(f"NEW-{i}")["etch"] for i in range(10)} == {"a"}
    assert counts()["miss"] == 2


def test_config__write_committed_between_read_and_compile__later_version_used(decider):
    # Given a request that read version v, then an admin write committed v+1
    etch = make_experiment(decider.product, "etch")
    read_version = _version(decider.product)
    decider.change(etch, status="disabled")
    # When the config is compiled for v
    compiled = get_config(decider.product.id, read_version)
    # Then it is the newer one, stored under its own version (never newer data under v)
    assert compiled.version == _version(decider.product) != read_version
    assert compiled.paused_keys == ("etch",)
    assert shared_get(cache_key(decider.product.id, read_version)) is None
    assert shared_get(cache_key(decider.product.id, compiled.version)) is not None


def test_compile_config__statuses_steps_and_variant_map():
    untargeted = (None,) * 7  # conditions, schedule, layer slot, randomize_by
    rows = [
        # experiment id, key, status, salt, coverage, step, targeting, variant id, key, ...
        (1, "etch", "enabled", "s1", 0.5, "etch-step", *untargeted, 10, "a", "enabled", 1.0),
        (1, "etch", "enabled", "s1", 0.5, "etch-step", *untargeted, 11, "b", "disabled", 1.0),
        (1, "etch", "enabled", "s1", 0.5, "etch-step", *untargeted, 12, "c", "removed", 1.0),
        (1, "etch", "enabled", "s1", 0.5, "etch-step", *untargeted, 13, "d", "enabled", 3.0),
        (2, "paused", "disabled", "s2", 1.0, None, *untargeted, None, None, None, None),
        (3, "empty", "enabled", "s3", 1.0, None, *untargeted, None, None, None, None),
    ]
    compiled = compile_config(ConfigEntry.model_validate(entry_from_rows(5, 7, rows)))
    assert compiled.version == 7
    assert [e.key for e in compiled.experiments] == ["etch", "empty"]
    assert compiled.paused_keys == ("paused",)
    assert [e.key for e in compiled.by_step["etch-step"]] == ["etch"]
    etch = compiled.by_key["etch"]
    # Every variant is kept for sticky lookups; only enabled ones get ranges
    assert dict(etch.variant_keys_by_id) == {10: "a", 11: "b", 12: "c", 13: "d"}
    assert etch.removed_variant_ids == frozenset({12})
    assert [(r.key, r.start, r.end) for r in etch.ranges] == [
        ("a", 0.0, 0.125),
        ("d", 0.25, 0.625),
    ]
    assert compiled.by_key["empty"].ranges == ()


def test_compile_config__no_experiments():
    compiled = compile_config(ConfigEntry.model_validate(entry_from_rows(5, 0, [(None,) * 17])))
    assert compiled.experiments == () and compiled.paused_keys == ()


def _caches_with_redis_down() -> dict:
    caches_setting = copy.deepcopy(settings.CACHES)
    caches_setting["decide"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        # Nothing listens on port 1: every call fails fast, like a Redis outage.
        "LOCATION": "redis://127.0.0.1:1/0",
        "KEY_PREFIX": "decide",
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": settings.REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": settings.REDIS_SOCKET_TIMEOUT,
            "IGNORE_EXCEPTIONS": False,
        },
    }
    return caches_setting


def test_config__redis_down__decides_from_database_and_counts_errors(decider, counts):
    # Given
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    with override_settings(CACHES=_caches_with_redis_down()):
        # When Redis is unreachable
        first = decider.post("/api/v1/decide", {"unit": "SN-1"})
        config.clear_memory()  # a fresh worker
        batch = decider.post("/api/v1/decide/batch", {"units": ["SN-1", "SN-2"]})
        flag = decider.flag("etch", "SN-3")
        # Then every answer is right, from the database
        assert first.status_code == 200
        assert first.json()["variants"] == {"etch": expected_variant(etch, "SN-1")}
        assert batch.status_code == 200
        assert [d["variants"]["etch"] for d in batch.json()["decisions"]] == [
            expected_variant(etch, "SN-1"),
            expected_variant(etch, "SN-2"),
        ]
        assert flag.status_code == 200
        # And an admin change is still seen at once (the database is the authority)
        decider.change(etch, status="disabled")
        assert decider.decide("SN-1", experiments=["etch"]) == {"etch": None}
    # And the outage is counted (one failed read per compile), nothing was a hit
    observed = counts()
    assert observed["error"] >= 3
    assert observed["hit"] == 0


def test_config__redis__entries_under_versioned_key_with_collection_ttl(decider):
    requires_redis()
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    key = cache_key(decider.product.id, _version(decider.product))
    cache = caches["decide"]
    assert shared_get(key) is not None
    ttl = cache.ttl(key)
    assert 0 < ttl <= config.SHARED_CACHE_TTL_SECONDS
