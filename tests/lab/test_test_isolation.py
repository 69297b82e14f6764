"""The suite never touches data it did not create (docs/operations.md, "Tests")."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import requires_postgres, requires_redis

ROOT = Path(__file__).resolve().parents[2]


def _raw_redis():
    from django.core.cache import caches

    return caches["decide"].client.get_client(write=True)


@pytest.mark.django_db
def test_isolation__redis_key_outside_the_suite__survives_a_test_run():
    requires_redis()
    # Given a key a user stored in the Redis database REDIS_URL names
    raw = _raw_redis()
    user_key = f"users-own-data-{uuid.uuid4().hex}"
    raw.set(user_key, b"precious")
    try:
        # When a test run that writes and clears caches goes by (its own process)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "tests/decide/test_config_cache.py"],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if k != "CACHE_KEY_PREFIX"},
                # the inner run's own test database, beside this run's
                "TEST_DATABASE_NAME": f"{connection.settings_dict['NAME']}_inner",
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        # Then the user's key is still there
        assert raw.get(user_key) == b"precious"
    finally:
        raw.delete(user_key)


def test_isolation__cache_keys__carry_the_runs_own_prefix():
    prefix = os.environ["CACHE_KEY_PREFIX"]
    assert prefix.startswith("labtest-")
    for alias, options in settings.CACHES.items():
        assert options["KEY_PREFIX"].startswith(f"{prefix}:"), alias


@pytest.mark.django_db
def test_isolation__postgres__runs_in_a_database_of_its_own():
    requires_postgres()
    configured = os.environ["DATABASE_URL"].rsplit("/", 1)[-1].split("?")[0]
    assert connection.settings_dict["NAME"] != configured
    assert connection.settings_dict["NAME"].startswith("lab_test_")
