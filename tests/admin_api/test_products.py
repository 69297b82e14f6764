"""Products: the tenant's top-level objects."""

from lab.models import AuditEvent, Product


def test_products__create_then_get__round_trips(tenant):
    # When
    created = tenant.post("/products", {"key": "widget", "name": "Widget"})
    # Then
    assert created.status_code == 201
    assert created.json()["key"] == "widget"
    assert created.json()["status"] == "enabled"
    assert tenant.get("/products/widget").json()["name"] == "Widget"


def test_products__duplicate_key__409(tenant, product):
    response = tenant.post("/products", {"key": "widget"})
    assert response.status_code == 409
    assert "widget" in response.json()["detail"]


def test_products__same_key_for_another_tenant__allowed(tenant, other_tenant, product):
    assert other_tenant.post("/products", {"key": "widget"}).status_code == 201
    assert Product.objects.filter(key="widget").count() == 2


def test_products__another_tenants_product__404_on_every_verb(other_tenant, product):
    assert other_tenant.get("/products/widget").status_code == 404
    assert other_tenant.patch("/products/widget", {"name": "x"}).status_code == 404
    assert other_tenant.delete("/products/widget").status_code == 404
    assert other_tenant.get("/products").json() == {"items": [], "count": 0}


def test_products__list__paginated(tenant):
    for i in range(5):
        tenant.post("/products", {"key": f"p{i}"})
    page = tenant.get("/products", limit=2, offset=1).json()
    assert page["count"] == 5
    assert [p["key"] for p in page["items"]] == ["p1", "p2"]


def test_products__delete__removes_hides_and_audits(tenant, product):
    # When
    response = tenant.delete("/products/widget")
    # Then
    assert response.json()["status"] == "removed"
    assert tenant.get("/products").json()["count"] == 0
    assert tenant.get("/products", status="removed").json()["count"] == 1
    event = AuditEvent.objects.get()
    assert (event.actor, event.from_value, event.to_value) == ("alice", "enabled", "removed")
    # And the key stays taken until it is restored with PATCH
    assert tenant.post("/products", {"key": "widget"}).status_code == 409
    assert tenant.patch("/products/widget", {"status": "enabled"}).json()["status"] == "enabled"


def test_products__status_change__bumps_config_version(tenant, product):
    before = Product.objects.get().config_version
    tenant.patch("/products/widget", {"status": "disabled"})
    assert Product.objects.get().config_version != before


def test_products__bad_input__4xx_with_detail(tenant):
    cases = [
        {"key": "Has-Caps"},
        {"key": "-leading"},
        {"key": "x" * 65},
        {"key": "ok", "name": "nul\x00byte"},
        {"key": 12},
        {"key": "ok", "unknown": 1},
        {},
    ]
    for body in cases:
        response = tenant.post("/products", body)
        assert response.status_code == 422, (body, response.content)
        assert response.json()["detail"]
    assert tenant.post("/products", raw=b"{not json").status_code == 400
    assert tenant.patch("/products/nope", {"status": "gone"}).status_code in (404, 422)
    assert Product.objects.count() == 0


def test_products__no_or_bad_token__401(client, db):
    assert client.get("/api/admin/v1/products").status_code == 401
    response = client.get("/api/admin/v1/products", HTTP_AUTHORIZATION="Bearer lab_nope_x")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_client_keys__create_list_revoke(tenant, product):
    # When
    created = tenant.post("/products/widget/client-keys", {"name": "line 1"})
    # Then the secret is shown once, and only the prefix afterwards
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("lck_")
    listed = tenant.get("/products/widget/client-keys").json()
    assert listed["count"] == 1
    assert "secret" not in listed["items"][0]
    # And revoking hides it
    key_id = created.json()["id"]
    assert tenant.delete(f"/products/widget/client-keys/{key_id}").status_code == 204
    assert tenant.get("/products/widget/client-keys").json()["count"] == 0
    assert tenant.delete(f"/products/widget/client-keys/{key_id}").status_code == 404


def test_client_keys__another_tenant__404(other_tenant, tenant, product):
    key_id = tenant.post("/products/widget/client-keys", {}).json()["id"]
    assert other_tenant.get("/products/widget/client-keys").status_code == 404
    assert other_tenant.post("/products/widget/client-keys", {}).status_code == 404
    assert other_tenant.delete(f"/products/widget/client-keys/{key_id}").status_code == 404


def test_products__nul_or_malformed_key_in_path__404(tenant, product):
    assert tenant.get("/products/a%00b").status_code == 404
    assert tenant.get("/products/a%00b/client-keys").status_code == 404
    assert tenant.get("/products/" + "x" * 300).status_code == 404


def test_products__absurd_pagination__422_not_500(tenant, product):
    response = tenant.get("/products", offset=10**40)
    assert response.status_code == 422
    assert tenant.get("/products", limit=0).status_code == 422
    assert tenant.get("/products", limit=10**6).status_code == 422


def test_products__body_not_json__400_says_why(tenant):
    for raw in (b"{not json", b'{"key": "ok", "name": NaN}', b'{"key": "\\ud800"}'):
        response = tenant.post("/products", raw=raw)
        assert response.status_code == 400, raw
        assert response.json()["detail"].startswith("the body is not valid JSON: "), raw
