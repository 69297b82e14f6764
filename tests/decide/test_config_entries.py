"""Shared config-cache entries that cannot be wrong (docs/decide.md, "The config cache").

Whatever sits under a product's key in Redis — garbage of any shape, an entry of an older
format, a well-formed entry for other experiments, a malicious pickle — decide answers by the
database: no 5xx, the right variants, nothing stored that the database does not hold, no code
run. Each refused entry is counted as lab_config_cache_total{result="error"}.
"""

import pickle

import orjson
import pytest
from prometheus_client import REGISTRY

from decide import config
from decide.config import cache_key, encode_entry, shared_get, shared_set
from lab.models import Assignment, Product
from tests.conftest import requires_redis
from tests.decide.conftest import expected_variant, make_experiment, unit_for


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("lab_config_cache_total", {"result": result}) or 0.0


@pytest.fixture
def redis_decider(decider):
    requires_redis()
    return decider


def _key(product: Product) -> str:
    product.refresh_from_db()
    return cache_key(product.id, product.config_version)


def _valid_entry(product: Product) -> dict:
    """The entry the database would produce now, as plain data."""
    product.refresh_from_db()
    return config._load(product.id, product.config_version)


class _Payload:
    """A pickle that creates a file when unpickled: what an attacker would plant."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _garbage(product: Product, marker: str) -> dict[str, bytes]:
    entry = _valid_entry(product)
    signed = encode_entry(entry)
    unknown_variant = orjson.loads(orjson.dumps(entry))
    unknown_variant["experiments"][0]["variants"][0]["id"] = 999_999_999
    wrong_type = orjson.loads(orjson.dumps(entry))
    wrong_type["experiments"][0]["coverage"] = "1.0"
    return {
        "int": b"42",
        "dict": orjson.dumps({"a": 1}),
        "list": orjson.dumps([1, 2, 3]),
        "truncated JSON": signed[: len(signed) // 2],
        "unsigned valid JSON": orjson.dumps(entry),
        "unknown variant id, unsigned": orjson.dumps(unknown_variant),
        "wrong type, signed": encode_entry(wrong_type),
        "empty": b"",
        "not UTF-8": b"\xff\xfe\x00",
        "pickle of the old rows": pickle.dumps([(1, "etch", "enabled", "s", 1.0, None)]),
        "malicious pickle": pickle.dumps(_Payload(marker)),
    }


@pytest.mark.parametrize(
    "shape",
    [
        "int",
        "dict",
        "list",
        "truncated JSON",
        "unsigned valid JSON",
        "unknown variant id, unsigned",
        "wrong type, signed",
        "empty",
        "not UTF-8",
        "pickle of the old rows",
        "malicious pickle",
    ],
)
def test_entries__garbage_under_the_key__right_answers_counted_no_code_run(
    redis_decider, shape, tmp_path
):
    # Given a product, and a value of `shape` planted under its current key
    decider = redis_decider
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    marker = tmp_path / "pwned"
    key = _key(decider.product)
    shared_set(key, _garbage(decider.product, str(marker))[shape])
    errors_before = cache_count("error")
    # When a fresh worker decides
    units = [f"SN-{i}" for i in range(6)]
    response = decider.post("/api/v1/decide/batch", {"units": units})
    flag = decider.flag("etch", "SN-9")
    # Then every answer is the database's, and nothing ran
    assert response.status_code == 200, response.content
    assert [d["variants"] for d in response.json()["decisions"]] == [
        {"etch": expected_variant(etch, unit)} for unit in units
    ]
    assert flag.status_code == 200
    assert not marker.exists()
    stored = dict(
        Assignment.objects.filter(experiment=etch).values_list("unit__key", "variant__key")
    )
    assert stored == {unit: expected_variant(etch, unit) for unit in [*units, "SN-9"]}
    # And the refusal is counted once, and the entry replaced by the database's
    assert cache_count("error") - errors_before == 1
    config.clear_memory()
    assert config.decode_entry(shared_get(key), decider.product.id, _version(decider.product))


def _version(product: Product) -> int:
    product.refresh_from_db()
    return product.config_version


def test_entries__signed_entry_with_foreign_variant__nothing_wrong_stored(redis_decider):
    # Given a well-formed, correctly signed entry whose variants are not the product's
    # (a writer's bug, or a leaked SECRET_KEY): the database still has the last word
    decider = redis_decider
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    entry = _valid_entry(decider.product)
    for offset, variant in enumerate(entry["experiments"][0]["variants"]):
        variant["id"] = 10**9 + offset
    shared_set(_key(decider.product), encode_entry(entry))
    # When a new unit and a known unit are decided by a fresh worker
    known = unit_for(etch, "b")
    Assignment.objects.create(
        experiment=etch,
        unit=decider.product.units.create(key=known),
        variant=etch.variants.get(key="b"),
        source="hash",
    )
    config.clear_memory()
    answers = decider.batch(["NEW-1", known])
    # Then both answers are the database's, and only real variants are stored
    assert [a["variants"]["etch"] for a in answers] == [expected_variant(etch, "NEW-1"), "b"]
    stored = dict(
        Assignment.objects.filter(experiment=etch).values_list("unit__key", "variant__key")
    )
    assert stored == {"NEW-1": expected_variant(etch, "NEW-1"), known: "b"}


def test_entries__signed_entry_with_unknown_stored_variant__recompiled(redis_decider):
    # Given a known unit, and a signed entry that lacks its (real) variant
    decider = redis_decider
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    unit = unit_for(etch, "a")
    decider.decide(unit)
    entry = _valid_entry(decider.product)
    entry["experiments"][0]["variants"] = entry["experiments"][0]["variants"][1:]
    shared_set(_key(decider.product), encode_entry(entry))
    config.clear_memory()
    errors_before = cache_count("error")
    # When
    answer = decider.decide(unit)
    # Then the unit keeps its variant (no re-bucketing off a variant that exists), counted
    assert answer == {"etch": "a"}
    assert Assignment.objects.get(unit__key=unit).source == "hash"
    assert cache_count("error") - errors_before == 1


def test_entries__older_format__is_a_miss(redis_decider):
    # Given an entry of format 1 (the pickled rows) under the key format 1 used
    decider = redis_decider
    etch = make_experiment(decider.product, "etch")
    decider.product.refresh_from_db()
    old_key = f"config:{decider.product.id}:{decider.product.config_version}"
    shared_set(
        old_key, pickle.dumps([(999, "etch", "enabled", "x", 1.0, None, 1, "zz", "enabled", 1.0)])
    )
    misses_before = cache_count("miss")
    # When
    answer = decider.decide("SN-1")
    # Then it is never read: a plain miss, the right answer
    assert answer == {"etch": expected_variant(etch, "SN-1")}
    assert cache_count("miss") - misses_before == 1


def test_entries__format_version_is_in_key_and_entry(redis_decider):
    decider = redis_decider
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    key = _key(decider.product)
    assert key.startswith(f"config:v{config.FORMAT_VERSION}:")
    payload, _, _signature = shared_get(key).decode().rpartition(":")
    assert orjson.loads(payload)["format"] == config.FORMAT_VERSION


def test_entries__entry_for_another_key__refused(redis_decider):
    # Given product B's (valid, signed) entry copied under product A's key
    decider = redis_decider
    make_experiment(decider.product, "etch")
    other = Product.objects.create(user=decider.product.user, key="other")
    make_experiment(other, "etch", [("x", 1)])
    shared_set(_key(decider.product), encode_entry(_valid_entry(other)))
    errors_before = cache_count("error")
    # Then A answers by its own experiments
    assert decider.decide("SN-1")["etch"] in ("a", "b")
    assert cache_count("error") - errors_before == 1


def test_entries__timeline_rewound_like_a_restore__never_reads_the_abandoned_one(redis_decider):
    # Given a product at version V (what a dump would hold)
    decider = redis_decider
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    dumped_version = _version(decider.product)
    # And a timeline that moved on and was served: no new unit goes to "b"
    decider.change(etch.variants.get(key="b"), weight=0)
    assert {decider.decide(f"OLD-{i}")["etch"] for i in range(10)} == {"a"}
    # When the database is rewound to V (the dump restored) and moves on the other way
    Product.objects.filter(pk=decider.product.pk).update(config_version=dumped_version)
    etch.variants.filter(key="b").update(weight=1)
    config.clear_memory()  # the restored deployment's workers
    decider.change(etch.variants.get(key="a"), weight=0)
    # Then it is served its own config, never the abandoned timeline's
    assert {decider.decide(f"NEW-{i}")["etch"] for i in range(10)} == {"b"}
