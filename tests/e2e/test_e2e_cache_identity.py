"""The shared config cache against real gunicorns, PostgreSQL and Redis (docs/decide.md,
"The config cache"): deployments sharing one Redis, a restored backup next to its original,
and poisoned entries never give a 5xx, a wrong variant, or run code.

Every server here has the default cache settings of this test run: the same Redis database
and the same CACHE_KEY_PREFIX (tests/settings.py), as two deployments with default settings
would have.
"""

import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis
from django.conf import settings
from django.core.cache import caches

from decide.config import cache_key, encode_entry
from tests.conftest import requires_postgres, requires_redis
from tests.e2e.conftest import Server, _postgres_database, gunicorn, migrate, server_env

UNITS = [f"SN-{i}" for i in range(12)]


@pytest.fixture
def folder() -> Iterator[Path]:
    requires_postgres()
    requires_redis()
    path = Path(tempfile.mkdtemp(prefix="lab-e2e-cache-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def deployment(name: str, folder: Path) -> Iterator[Server]:
    """A deployment of its own: a fresh database `name`, migrated, and its gunicorn."""
    databases = _postgres_database(name)
    database_url, vendor = next(databases)
    try:
        env = server_env(database_url)
        migrate(env)
        with gunicorn(env, folder, vendor) as running:
            yield running
    finally:
        databases.close()


def _seed(server: Server, variants: list) -> dict:
    return server.orm(
        "seed",
        username="ops",
        product="widget",
        experiments=[{"key": "etch", "variants": variants}],
    )


def _expected(server: Server, units: list[str]) -> list[str | None]:
    variants = server.orm("expected", product="widget", experiment="etch", units=units)
    return [variants["variants"][unit] for unit in units]


def _decided(server: Server, key: str, units: list[str]) -> list[str | None]:
    return [server.decide(key, unit)["etch"] for unit in units]


def _stored(server: Server) -> dict[str, str]:
    rows = server.orm("assignments", product="widget")["assignments"]
    return {unit: variant for experiment, unit, variant, _source in rows if experiment == "etch"}


def test_e2e__two_deployments_share_one_redis__each_decides_by_its_own(folder):
    pid = os.getpid()
    with (
        deployment(f"lab_e2e_first_{pid}", folder) as first,
        deployment(f"lab_e2e_second_{pid}", folder) as second,
    ):
        # Given the same product (same ids: both databases are fresh) with other experiments
        first_key = _seed(first, [["short", 1], ["long", 1]])["client_key"]
        second_key = _seed(second, [["x", 1], ["y", 1], ["z", 1]])["client_key"]
        assert (
            first.orm("product_state", product="widget")["id"]
            == second.orm("product_state", product="widget")["id"]
        )
        # When the first deployment decides (filling the shared cache), then the second
        assert _decided(first, first_key, UNITS) == _expected(first, UNITS)
        answers = _decided(second, second_key, UNITS)
        # Then the second answers and stores by its own experiments
        assert answers == _expected(second, UNITS)
        assert set(answers) <= {"x", "y", "z"}
        assert _stored(second) == dict(zip(UNITS, answers, strict=True))
        # And the first is untouched by the second's entries
        assert _decided(first, first_key, UNITS) == _expected(first, UNITS)


def test_e2e__restored_dump_next_to_the_original__never_reads_the_other_timeline(folder):
    original_name = f"lab_e2e_original_{os.getpid()}"
    restored_name = f"lab_e2e_restored_{os.getpid()}"
    with deployment(original_name, folder) as original:
        # Given a product decided on, and a dump of its database
        key = _seed(original, [["a", 1], ["b", 1]])["client_key"]
        before = _decided(original, key, UNITS)
        dump = folder / "original.dump"
        subprocess.run(
            ["pg_dump", "--format=custom", f"--file={dump}", _database_url(original_name)],
            check=True,
            capture_output=True,
        )
        # And the original's timeline moves on: no new unit goes to "b"
        original.orm(
            "set_variant_weight", product="widget", experiment="etch", variant="b", weight=0
        )
        assert set(_decided(original, key, [f"O-{i}" for i in range(12)])) == {"a"}

        # When the dump is restored next to it (same Redis) and its timeline moves on the
        # other way: no new unit goes to "a"
        restored_databases = _postgres_database(restored_name)
        restored_url, vendor = next(restored_databases)
        try:
            subprocess.run(
                ["pg_restore", "--no-owner", f"--dbname={restored_url}", str(dump)],
                check=True,
                capture_output=True,
            )
            env = server_env(restored_url)
            with gunicorn(env, folder, vendor) as restored:
                restored.orm(
                    "set_variant_weight", product="widget", experiment="etch", variant="a", weight=0
                )
                new_units = [f"R-{i}" for i in range(12)]
                answers = _decided(restored, key, new_units)
                # Then the restored database decides by its own timeline only
                assert set(answers) == {"b"}
                assert _decided(restored, key, UNITS) == before
                stored = _stored(restored)
                assert {unit: stored[unit] for unit in new_units} == dict.fromkeys(new_units, "b")
            # And the original still decides by its own
            assert set(_decided(original, key, [f"O2-{i}" for i in range(12)])) == {"a"}
        finally:
            restored_databases.close()


class _Payload:
    """Creates a file when unpickled: what an attacker who can write Redis would plant."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _error_count(server: Server) -> float:
    return server.metrics().get(("lab_config_cache_total", (("result", "error"),)), 0.0)


def test_e2e__poisoned_entries__right_answers_no_5xx_no_code_run(server, folder):
    # Given a product whose config entry is in Redis
    seeded = server.orm(
        "seed",
        username=f"poison-{os.getpid()}",
        product="poisoned",
        experiments=[{"key": "etch", "variants": [["a", 1], ["b", 1], ["c", 1]]}],
    )
    key = seeded["client_key"]
    marker = folder / "pwned"
    raw = redis.Redis.from_url(settings.REDIS_URL)
    shared = caches["decide"]

    def current_key() -> str:
        state = server.orm("product_state", product="poisoned")
        return shared.make_key(cache_key(state["id"], state["config_version"]))

    server.decide(key, "WARM-UP")
    entry = orjson.loads(raw.get(current_key()).decode().rpartition(":")[0])

    def with_unknown_variant() -> dict:
        poisoned = orjson.loads(orjson.dumps(entry))
        poisoned["version"] = server.orm("product_state", product="poisoned")["config_version"]
        poisoned["experiments"][0]["variants"][0]["id"] = 10**12
        return poisoned

    shapes = {
        "int": lambda: b"7",
        "dict": lambda: orjson.dumps({"experiments": 1}),
        "list": lambda: orjson.dumps([[1, "etch", "enabled"]]),
        "truncated": lambda: encode_entry(with_unknown_variant())[:40],
        "unknown variant id, unsigned": lambda: orjson.dumps(with_unknown_variant()),
        "unknown variant id, signed": lambda: encode_entry(with_unknown_variant()),
        "malicious pickle": lambda: pickle.dumps(_Payload(str(marker))),
    }
    for number, (shape, make) in enumerate(shapes.items()):
        # When a new config version is poisoned before any worker compiled it
        server.orm("set_experiment_status", product="poisoned", experiment="etch", status="enabled")
        raw.set(current_key(), make())
        errors_before = _error_count(server)
        units = [f"{number}-{i}" for i in range(9)]
        # Then every worker answers by the database
        responses = server.in_parallel(
            [
                lambda unit=unit: server.post("/api/v1/decide", {"unit": unit}, key)
                for unit in units
            ],
            threads=3,
        )
        assert [r.status_code for r in responses] == [200] * len(units), (shape, server.log_tail())
        expected = server.orm("expected", product="poisoned", experiment="etch", units=units)
        assert [r.json()["variants"]["etch"] for r in responses] == [
            expected["variants"][unit] for unit in units
        ], shape
        stored = {
            unit: variant
            for _, unit, variant, _ in server.orm("assignments", product="poisoned")["assignments"]
        }
        assert {unit: stored[unit] for unit in units} == expected["variants"], shape
        assert not marker.exists(), shape
        assert _error_count(server) > errors_before, shape
