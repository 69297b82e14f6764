"""The operations contract: health, readiness, metrics, request ids and JSON logs."""

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from django.db import OperationalError, connections

from tests.conftest import requires_redis

PROJECT_DIR = Path(__file__).resolve().parents[2]
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def test_healthz__process_up__200(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz__database_and_cache_reachable__200(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "cache": True}}


@pytest.mark.django_db
def test_readyz__redis_up__200(client):
    requires_redis()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["cache"] is True


@pytest.mark.django_db
def test_readyz__redis_unreachable__503_names_the_cache(client, settings):
    # Given a Redis URL nothing listens on
    settings.REDIS_URL = UNREACHABLE_REDIS
    settings.CACHES = {
        **settings.CACHES,
        "decide": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": UNREACHABLE_REDIS,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.05, "SOCKET_TIMEOUT": 0.05},
        },
    }
    # When
    response = client.get("/readyz")
    # Then the load balancer takes the instance out, and the body says why
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": True, "cache": False},
    }


def test_readyz__database_unreachable__503_names_the_database(client, monkeypatch):
    # Given a database that refuses connections
    def refuse():
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "ensure_connection", refuse)
    # When
    response = client.get("/readyz")
    # Then
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["database"] is False


def test_metrics__prometheus_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "# TYPE" in response.content.decode()


def test_metrics__the_fixed_decide_metrics_are_exposed(client):
    body = client.get("/metrics").content.decode()
    for name in (
        "lab_decide_requests_total",
        "lab_decide_duration_seconds",
        "lab_assignments_created_total",
        "lab_config_cache_total",
    ):
        assert f"# TYPE {name} " in body, name


def test_metrics__multiprocess_dir_set__sums_what_workers_wrote(client, monkeypatch, tmp_path):
    # Given a worker process that counted once into the multiprocess directory
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = "from prometheus_client import Counter; Counter('lab_ops_probe', 'probe').inc(3)"
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # When
    response = client.get("/metrics")
    # Then the count comes from the files, not from this process's memory
    assert response.status_code == 200
    assert "lab_ops_probe_total 3.0" in response.content.decode()


def test_request_id__none_supplied__one_is_generated(client):
    response = client.get("/healthz")
    assert GENERATED_ID.match(response["X-Request-ID"])


def test_request_id__valid_caller_id__echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-7f3a.2024:01_x")
    assert response["X-Request-ID"] == "lb-7f3a.2024:01_x"


@pytest.mark.parametrize(
    "hostile",
    [
        "id\r\nSet-Cookie: a=b",
        "trailing-newline\n",
        "<script>",
        "has space",
        "x" * 129,
        "ünïcode",
        "",
    ],
)
def test_request_id__hostile_caller_id__replaced(client, hostile):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=hostile)
    assert GENERATED_ID.match(response["X-Request-ID"])


def test_logs__every_stdout_line_is_one_json_object_with_a_request_id(tmp_path):
    # Given a process configured as in production, on a throwaway SQLite file and an
    # unreachable Redis (so readiness logs a warning with a multi-line traceback)
    script = "\n".join(
        [
            "import django",
            "django.setup()",
            "from django.test import Client",
            "client = Client()",
            "client.get('/healthz', HTTP_X_REQUEST_ID='probe-health')",
            "client.get('/readyz', HTTP_X_REQUEST_ID='probe-ready')",
            "client.get('/api/admin/v1/products')",
        ]
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'logs.sqlite3'}",
        "REDIS_URL": UNREACHABLE_REDIS,
        "LOG_LEVEL": "INFO",
        "ACCESS_LOG_LEVEL": "INFO",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # When
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Then every line parses on its own and says which request it belongs to
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert record.get("request_id"), line
        assert datetime.fromisoformat(record["time"]).utcoffset() is not None, line
        records.append(record)
    ready = [r for r in records if r["request_id"] == "probe-ready"]
    assert {r["logger"] for r in ready} >= {"config.ops", "lab.access", "django.request"}
    warning = next(r for r in records if r["level"] == "WARNING")
    assert warning["request_id"] == "probe-ready"
    assert "Traceback" in warning["exc_info"]
    access = [r for r in records if r["logger"] == "lab.access"]
    assert {(r["path"], r["status"]) for r in access} >= {
        ("/healthz", 200),
        ("/readyz", 503),
        ("/api/admin/v1/products", 401),
    }


def test_unknown_url__json_404(client, db):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "/no/such/route" in response.json()["detail"]
