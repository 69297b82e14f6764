"""Fixtures shared by every test package.

Under CI=true the suite runs against the real PostgreSQL and Redis named by DATABASE_URL
and REDIS_URL; a service that is configured but unreachable fails the run (never a skip).
"""

import json
import os
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import Client

from lab.services.credentials import api_token_create

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionstart(session):
    if IN_CI and not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        pytest.exit("CI=true needs DATABASE_URL and REDIS_URL (PostgreSQL and Redis)", 3)


def requires_postgres():
    """Skip locally on SQLite; under CI the suite is on PostgreSQL, so nothing skips."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != settings.POSTGRESQL_ENGINE:
        if IN_CI:
            pytest.fail("CI=true but the database is not PostgreSQL")
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


def requires_redis():
    if not settings.REDIS_URL:
        if IN_CI:
            pytest.fail("CI=true but REDIS_URL is not set")
        pytest.skip("needs Redis (set REDIS_URL)")
    from django.core.cache import caches

    try:
        caches["decide"].client.get_client(write=True).ping()
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"Redis at {settings.REDIS_URL} is unreachable: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")


def clear_test_caches() -> None:
    """Delete the cache keys of this test run, and nothing else.

    Redis keys are deleted by the run's own prefix (tests/settings.py), never with
    FLUSHDB: the Redis that REDIS_URL names may hold a user's data.
    """
    from django.core.cache import caches

    for alias in settings.CACHES:
        cache = caches[alias]
        try:
            if hasattr(cache, "delete_pattern"):
                cache.delete_pattern("*")
            else:
                cache.clear()  # in-process: this process's own memory
        except Exception:
            pass
    from decide import config

    config.clear_memory()


@pytest.fixture(autouse=True)
def _clear_caches():
    """Each test starts with empty caches (Redis keys of earlier tests would leak state)."""
    clear_test_caches()
    yield


@dataclass
class ApiClient:
    """A JSON client that sends a bearer token, as a real API user would."""

    token: str
    client: Client
    prefix: str = "/api/admin/v1"

    def _call(self, method: str, path: str, body=None, raw: bytes | None = None, **query):
        # Admin paths are relative to the admin API; other APIs and ops paths are given whole.
        outside = ("/api/", "/ofrep/", "/healthz", "/readyz", "/metrics")
        url = path if path.startswith(outside) else f"{self.prefix}{path}"
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}
        if method == "get":
            return self.client.get(url, query, **kwargs)
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        return getattr(self.client, method)(
            url, data=data, content_type="application/json", **kwargs
        )

    def get(self, path, **query):
        return self._call("get", path, **query)

    def post(self, path, body=None, raw=None):
        return self._call("post", path, body, raw)

    def patch(self, path, body=None, raw=None):
        return self._call("patch", path, body, raw)

    def put(self, path, body=None, raw=None):
        return self._call("put", path, body, raw)

    def delete(self, path):
        return self._call("delete", path)


@pytest.fixture
def tenant(db):
    issued = api_token_create(username="alice")
    return ApiClient(token=issued.secret, client=Client())


@pytest.fixture
def other_tenant(db):
    issued = api_token_create(username="mallory")
    return ApiClient(token=issued.secret, client=Client())


@pytest.fixture
def product(tenant):
    response = tenant.post("/products", {"key": "widget", "name": "Widget"})
    assert response.status_code == 201, response.content
    return response.json()
