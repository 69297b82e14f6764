"""CORS: browsers on the origins in CORS_ALLOWED_ORIGINS may call OFREP and decide.

(tests/e2e/test_e2e_openfeature.py runs the OpenFeature web provider in headless Chromium on
a page of another origin.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings

from lab.services.credentials import client_key_create
from tests.decide.conftest import make_experiment
from tests.factories import ProductFactory

APP = "http://app.example:3000"
CLIENT_PATHS = ["/ofrep/v1/evaluate/flags/etch", "/ofrep/v1/evaluate/flags", "/api/v1/decide"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client_key(db) -> str:
    product = ProductFactory(key="widget")
    make_experiment(product, "etch", [("a", 1)])
    return client_key_create(product=product).secret


def _preflight(path: str, origin: str = APP, headers: str = "authorization,content-type"):
    return Client().options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS=headers,
    )


def _post(path: str, key: str, origin: str = APP, **headers):
    body = {"unit": "SN-1"} if path.startswith("/api/") else {"context": {"targetingKey": "SN-1"}}
    return Client().post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_ORIGIN=origin,
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **headers,
    )


@pytest.mark.parametrize("path", CLIENT_PATHS)
def test_cors__no_origin_configured__no_cors_headers(client_key, path):
    # Given the default settings (no origin allowed)
    preflight = _preflight(path)
    response = _post(path, client_key)
    # Then a browser on another origin is refused: no Access-Control-Allow-Origin at all
    assert "Access-Control-Allow-Origin" not in preflight
    assert "Access-Control-Allow-Origin" not in response
    # And the server answers as usual (CORS is enforced by browsers, not here)
    assert response.status_code == 200


@override_settings(CORS_ALLOWED_ORIGINS=[APP])
@pytest.mark.parametrize("path", [*CLIENT_PATHS, "/api/v1/decide/batch"])
def test_cors__allowed_origin__preflight_for_the_provider_headers(client_key, path):
    # When a browser asks whether it may send what the OFREP web provider sends
    response = _preflight(path, headers="authorization,content-type,if-none-match,x-api-key")
    # Then it may
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-none-match", "x-api-key"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response
    assert int(response["Access-Control-Max-Age"]) > 0


@override_settings(CORS_ALLOWED_ORIGINS=[APP])
def test_cors__allowed_origin__answer_exposes_etag(client_key):
    # When the bulk evaluation is called from the allowed origin
    response = _post("/ofrep/v1/evaluate/flags", client_key)
    # Then the page may read the answer and its ETag (for If-None-Match polling)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == APP
    exposed = {h.strip().lower() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert "etag" in exposed
    assert response["ETag"]
    # And the 304 of a poll carries the same headers
    again = _post("/ofrep/v1/evaluate/flags", client_key, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert again["Access-Control-Allow-Origin"] == APP


@override_settings(CORS_ALLOWED_ORIGINS=[APP])
def test_cors__errors_are_readable_by_the_page(client_key):
    # A 401 and a 404 carry the CORS headers too, so the provider sees the real status
    unauthorized = _post("/ofrep/v1/evaluate/flags/etch", "lck_0123456789ab_nope")
    assert unauthorized.status_code == 401
    assert unauthorized["Access-Control-Allow-Origin"] == APP
    missing = _post("/ofrep/v1/evaluate/flags/nope", client_key)
    assert missing.status_code == 404
    assert missing["Access-Control-Allow-Origin"] == APP


@override_settings(CORS_ALLOWED_ORIGINS=[APP])
@pytest.mark.parametrize("origin", ["http://evil.example", "http://app.example:3001", "null"])
def test_cors__other_origin__refused(client_key, origin):
    assert "Access-Control-Allow-Origin" not in _preflight(CLIENT_PATHS[0], origin)
    assert "Access-Control-Allow-Origin" not in _post(CLIENT_PATHS[0], client_key, origin)


@override_settings(CORS_ALLOWED_ORIGINS=[APP])
@pytest.mark.parametrize(
    "path", ["/api/admin/v1/products", "/api/v1/openapi.json", "/healthz", "/api/v1/decidex"]
)
def test_cors__admin_and_other_paths__never_offered(db, path):
    # The admin API (and anything but decide and OFREP) is not for pages of other origins
    response = _preflight(path)
    assert "Access-Control-Allow-Origin" not in response


def test_cors__allowed_origins__read_from_the_environment():
    # CORS_ALLOWED_ORIGINS is a comma-separated list of origins; unset means none
    code = "from django.conf import settings; print(settings.CORS_ALLOWED_ORIGINS)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("CORS_ALLOWED_ORIGINS", None)

    def read(value: str | None) -> str:
        run_env = dict(env) if value is None else {**env, "CORS_ALLOWED_ORIGINS": value}
        completed = subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            cwd=ROOT,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return completed.stdout.strip()

    assert read(None) == "[]"
    assert read("https://a.example,http://localhost:5173") == (
        "['https://a.example', 'http://localhost:5173']"
    )
