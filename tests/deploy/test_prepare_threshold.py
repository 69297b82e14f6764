"""DATABASE_PREPARE_THRESHOLD reaches the hot path's connection (docs/scaling.md §4): "none"
turns server-side prepared statements off, for transaction pooling on PgBouncer < 1.21."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[2]

# The hot path runs one statement three times (as it runs its own, DEBUG off), then says
# the connection's threshold and how many statements the server holds prepared for this
# session.
PROBE = (
    "import django; django.setup(); from django.db import connection; from decide import store; "
    "assert not connection.queries_logged; "
    "[store._rows('SELECT 1 WHERE 1 = %s', [1]) for _ in range(3)]; "
    "prepared = store._rows('SELECT count(*) FROM pg_prepared_statements', []); "
    "print(connection.connection.prepare_threshold, prepared[0][0])"
)


def _probe(threshold: str | None) -> list[str]:
    settings = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_NAME",)}
    env.pop("DATABASE_PREPARE_THRESHOLD", None)
    env.update(
        DATABASE_URL=(
            f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/"
            f"{settings['NAME']}"
        ),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    if threshold is not None:
        env["DATABASE_PREPARE_THRESHOLD"] = threshold
    run = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split()


@pytest.mark.django_db
def test_prepare_threshold__none__hot_path_prepares_nothing_on_the_server():
    requires_postgres()
    # Given DATABASE_PREPARE_THRESHOLD=none (a transaction-pooling PgBouncer 1.18 in front)
    # When the hot path runs the same statement three times
    threshold, prepared = _probe("none")
    # Then the connection prepares nothing: every statement is parsed where it runs
    assert threshold == "None"
    assert prepared == "0"


@pytest.mark.django_db
def test_prepare_threshold__unset__hot_path_prepares_from_the_second_run():
    requires_postgres()
    # Given no DATABASE_PREPARE_THRESHOLD
    # When the hot path runs the same statement three times
    threshold, prepared = _probe(None)
    # Then it is prepared on the server from its second execution, as measured in RESULTS
    assert threshold == "2"
    assert int(prepared) >= 1
