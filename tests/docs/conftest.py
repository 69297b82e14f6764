"""The doc examples run against a real gunicorn over a fresh database, started like the
end-to-end server (tests/e2e/conftest.py, whose pieces are reused) but with a database of
its own, `lab_docs_<pid>`, so that both can run in one session."""

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.conftest import (
    ROOT,
    WORKERS,
    Server,
    _free_port,
    _sqlite_database,
    _wait_until_up,
)


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
        env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="lab.settings",
            PYTHONPATH=str(ROOT),
            LOG_LEVEL="WARNING",
            ACCESS_LOG_LEVEL="WARNING",
        )
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        port = _free_port()
        log_path = folder / "gunicorn.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"),
                    *("-b", f"127.0.0.1:{port}", "-w", str(WORKERS), "lab.wsgi:application"),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        running = Server(f"http://127.0.0.1:{port}", env, log_path, vendor=vendor)
        try:
            _wait_until_up(running, process)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        databases.close()
        shutil.rmtree(folder, ignore_errors=True)
