"""Fixtures of the failure drills: each drill gets its own PostgreSQL, Redis and gunicorn.

The cluster is initialised, migrated and seeded once per session and copied for each drill
(see tests/drills/harness.py).
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.ha.cluster import postgres_bindir
from tests.drills.harness import (
    DRILL_DATABASE,
    ClusterTemplate,
    LabServer,
    PostgresServer,
    RedisServer,
    Seed,
    free_port,
    give_to_postgres_user,
    manage,
    service_env,
    unavailable,
)

# What a failing drill's report shows: the end of each log of the services it started.
SERVICE_LOGS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def drill_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="lab-drills-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_template(drill_root: Path) -> ClusterTemplate:
    """An initialised, migrated and seeded cluster, stopped: what each drill copies."""
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries (initdb) are not installed")
    if os.geteuid() == 0 and not (shutil.which("runuser") and _user_exists("postgres")):
        unavailable("running as root without runuser and a `postgres` user to run PostgreSQL")
    home = drill_root / "template"
    home.mkdir()
    give_to_postgres_user(home)
    server = PostgresServer(bindir, home, free_port())
    server.initdb()
    server.start()
    try:
        with server.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DRILL_DATABASE}")
        env = service_env(DATABASE_URL=server.url())
        manage("migrate", "--no-input", env=env)
        seed = json.loads(manage("seed_drill", env=env).strip().splitlines()[-1])
    finally:
        server.stop()
    return ClusterTemplate(bindir=bindir, home=home, seed=Seed(**seed))


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def seed(cluster_template: ClusterTemplate) -> Seed:
    return cluster_template.seed


@pytest.fixture
def postgres(cluster_template: ClusterTemplate, drill_root: Path) -> Iterator[PostgresServer]:
    home = Path(tempfile.mkdtemp(prefix="pg-", dir=drill_root))
    give_to_postgres_user(home)
    shutil.copytree(cluster_template.home / "data", home / "data", symlinks=True)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(home)], check=True)
    server = PostgresServer(cluster_template.bindir, home, free_port())
    server.start()
    yield server
    if server.running():
        server.stop("immediate")
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def redis(drill_root: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    home = Path(tempfile.mkdtemp(prefix="redis-", dir=drill_root))
    server = RedisServer(free_port(), home / "redis.log")
    server.start()
    yield server
    server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for name, log_tail in item.stash.get(SERVICE_LOGS, []):
            report.sections.append((f"{name} log (end)", log_tail()))
    return report


@pytest.fixture
def start_lab(request, drill_root: Path, postgres: PostgresServer, redis: RedisServer):
    """Start Lab against this drill's PostgreSQL and Redis; extra settings as keywords.

    When the drill fails, its report ends with the ends of the gunicorn and PostgreSQL logs.
    """
    servers: list[LabServer] = []
    request.node.stash[SERVICE_LOGS] = [("PostgreSQL", postgres.log_tail)]

    def start(**settings: str) -> LabServer:
        home = Path(tempfile.mkdtemp(prefix="lab-", dir=drill_root))
        env = service_env(DATABASE_URL=postgres.url(), REDIS_URL=redis.url, **settings)
        server = LabServer(home, env)
        servers.append(server)
        request.node.stash[SERVICE_LOGS].append(("gunicorn", server.log_tail))
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
