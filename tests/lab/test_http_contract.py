"""What every route answers the same way: the Host check, JSON errors for 404 and 405, and
bodies that are JSON, said once (docs/admin.md, "Common")."""

import json

import pytest

from lab.models import Product, Unit
from lab.services.credentials import client_key_create
from tests.factories import ProductFactory

ROUTES = ["/healthz", "/readyz", "/metrics", "/api/v1/decide", "/api/admin/v1/products"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ROUTES)
def test_host__not_in_allowed_hosts__400_json_on_every_route(client, path):
    response = client.get(path, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "Host" in response.json()["detail"]


@pytest.mark.django_db
def test_host__allowed__served(client, settings):
    settings.ALLOWED_HOSTS = ["lab.example.com"]
    assert client.get("/healthz", HTTP_HOST="lab.example.com").status_code == 200
    assert client.get("/healthz", HTTP_HOST="other.example.com").status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/healthz", "GET"),
        ("post", "/metrics", "GET"),
        ("get", "/api/v1/decide", "POST"),
        ("delete", "/api/admin/v1/products", "GET"),
    ],
)
def test_method__not_allowed__405_json_with_allow(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert allowed in response["Allow"]
    assert method.upper() in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/admin/v1/nope"])
def test_route__unknown__404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


def test_body__duplicate_key__400_and_nothing_created(tenant):
    # Given a body that names the product's key twice: which one was meant?
    raw = b'{"key": "gear", "name": "Gear", "key": "other"}'
    # When
    response = tenant.post("/products", raw=raw)
    # Then
    assert response.status_code == 400
    assert "'key' twice" in response.json()["detail"]
    assert not Product.objects.exists()


@pytest.mark.parametrize("depth", [1000, 1023, 1100])
def test_body__nested_too_deeply__400_and_nothing_created(tenant, depth):
    # Given a body nested deeper than either JSON parser follows (orjson: 1024 levels, the
    # standard parser's duplicate-key check: Python's recursion limit)
    raw = b'{"key": "gear", "name": "Gear", "x": ' + b"[" * depth + b"]" * depth + b"}"
    # When
    response = tenant.post("/products", raw=raw)
    # Then
    assert response.status_code == 400, response.content
    assert "too deeply" in response.json()["detail"] or "depth limit" in response.json()["detail"]
    assert not Product.objects.exists()


def test_body__duplicate_key_nested__400(tenant, product):
    raw = json.dumps({"measurements": []})[:-1].encode() + b', "measurements": []}'
    response = tenant.post("/products/widget/measurements", raw=raw)
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/decide", "/api/v1/decide/batch"])
def test_decide__duplicate_key__400(client, path):
    # Given a working client key
    product = ProductFactory()
    secret = client_key_create(product=product).secret
    # When a body names the unit twice
    body = b'{"unit": "SN-1", "unit": "SN-2"}'
    if path.endswith("batch"):
        body = b'{"units": ["SN-1"], "units": ["SN-2"]}'
    response = client.post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    # Then neither is picked silently, and no unit is stored
    assert response.status_code == 400
    assert "twice" in response.json()["detail"]
    assert not Unit.objects.exists()


@pytest.mark.django_db
def test_decide__not_json_content_type__415(client):
    product = ProductFactory()
    secret = client_key_create(product=product).secret
    response = client.post(
        "/api/v1/decide",
        b"unit=SN-1",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 415


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_body__not_json_content_type__415_and_nothing_created(tenant, content_type):
    response = tenant.client.post(
        "/api/admin/v1/products",
        data=b'{"key": "gear"}',
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert not Product.objects.exists()


def test_body__json_with_charset_or_suffix__accepted(tenant):
    for content_type, key in [
        ("application/json; charset=utf-8", "a"),
        ("application/merge-patch+json", "b"),
    ]:
        response = tenant.client.post(
            "/api/admin/v1/products",
            data=json.dumps({"key": key}),
            content_type=content_type,
            HTTP_AUTHORIZATION=f"Bearer {tenant.token}",
        )
        assert response.status_code == 201, response.content


def test_body__schema_error__loc_names_the_field_once(tenant, product):
    response = tenant.post(
        "/products/widget/experiments", {"key": "etch", "variants": [{"key": "BAD KEY"}]}
    )
    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "variants", 0, "key"] in locs


@pytest.mark.django_db
@pytest.mark.parametrize("path", ROUTES)
def test_content_length__every_answer_says_how_long_it_is(client, path):
    # Sent as it is (not chunked), and a kept-alive connection knows where it ends
    for response in (client.get(path), client.get(path, HTTP_HOST="evil.example")):
        assert int(response["Content-Length"]) == len(response.content)
