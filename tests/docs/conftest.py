"""The doc examples run against a real gunicorn over a fresh database, started like the
end-to-end server (tests/e2e/conftest.py, whose pieces are reused) but with a database of
its own, `lab_docs_<pid>`, so that both can run in one session."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.conftest import Server, _sqlite_database, gunicorn, migrate, server_env


def _postgres_database() -> Iterator[tuple[str, str]]:
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"lab_docs_{os.getpid()}"
    admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}")), "postgresql"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def docs_server() -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="lab-docs-"))
    postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    databases = _postgres_database() if postgres else _sqlite_database(folder)
    database_url, vendor = next(databases)
    try:
        env = server_env(database_url)
        migrate(env)
        with gunicorn(env, folder, vendor) as running:
            yield running
    finally:
        databases.close()
        shutil.rmtree(folder, ignore_errors=True)
