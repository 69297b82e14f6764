"""The run's own PostgreSQL database (lab_bench_<run id>): created, migrated, seeded with
`manage.py seed_benchmark`, dropped at the end; and the Redis keys its servers share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from load_tests.bench.run import ROOT, log


def _with_database(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


class Database:
    """A throwaway PostgreSQL database of this run."""

    def __init__(self, base_url: str, name: str):
        import psycopg

        self._psycopg = psycopg
        self.base_url = base_url
        self.name = name
        self.url = _with_database(base_url, name)

    def _admin(self):
        return self._psycopg.connect(_with_database(self.base_url, "postgres"), autocommit=True)

    def create(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def execute(self, sql: str, params=None, *, fetch: bool = True):
        with self._psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if fetch else None

    def backend_pids(self) -> list[int]:
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        )
        return [row[0] for row in rows]

    def assignment_rows(self) -> int:
        return self.execute("SELECT count(*) FROM lab_assignment")[0][0]


def cache_prefix(database: Database) -> str:
    """The servers of one database share a cache key prefix (CACHE_KEY_PREFIX), and no
    other database's: product ids and config versions restart in every fresh database."""
    return f"bench-{database.name.removeprefix('lab_bench_')}"


def delete_cache_keys(redis_url: str, prefix: str) -> int:
    """Delete this run's keys from the benchmark's Redis db (nothing else is touched)."""
    if not redis_url:
        return 0
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        deleted += client.delete(key)
    return deleted


def manage(database_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class Seeded:
    client_key: str
    admin_token: str
    product: str
    known_units: int
    unit_prefix: str
    unit_digits: int
    experiments: dict[str, list[str]]
    toggle: dict[str, str]
    assignments: int
    # The units the warm shape repeats (the first ones); 0: all of them.
    warm_units: int = 0

    @classmethod
    def from_json(cls, data: dict) -> Seeded:
        return cls(
            client_key=data["client_key"],
            admin_token=data["admin_token"],
            product=data["product"],
            known_units=data["known_units"]["count"],
            unit_prefix=data["known_units"]["prefix"],
            unit_digits=data["known_units"]["digits"],
            experiments=data["experiments"],
            toggle=data["toggle"],
            assignments=data["assignments_total"],
        )


def prepare_database(
    base_url: str, name: str, assignments: int, *, analyzed: bool = True
) -> tuple[Database, Seeded]:
    database = Database(base_url, name)
    log(f"database {name}: create, migrate, seed {assignments:,} assignments")
    database.create()
    manage(database.url, "migrate", "--no-input", "-v", "0")
    if not analyzed:
        # As after a restore or a bulk import with autovacuum behind: no statistics at all.
        # Autovacuum is kept off this database's tables before the seed, so it gathers none
        # during the seed or the run either.
        tables = database.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'lab%%'"
        )
        for (table,) in tables:
            database.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)', fetch=False)
    started = time.monotonic()
    output = manage(database.url, "seed_benchmark", "--assignments", str(assignments))
    seeded = Seeded.from_json(json.loads(output.strip().splitlines()[-1]))
    if analyzed:
        database.execute("VACUUM ANALYZE", fetch=False)
    else:
        with_statistics = database.execute(
            "SELECT count(DISTINCT starelid) FROM pg_statistic s JOIN pg_class c "
            "ON c.oid = s.starelid WHERE c.relname LIKE 'lab%%'"
        )[0][0]
        log(f"database {name}: not analyzed ({with_statistics} tables have statistics)")
    log(
        f"database {name}: {seeded.assignments:,} assignments, {seeded.known_units:,} known "
        f"units, seeded in {time.monotonic() - started:.1f} s"
    )
    return database, seeded
