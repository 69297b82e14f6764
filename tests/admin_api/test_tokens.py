"""Admin API tokens can be revoked: by their owner through the API, by an operator with
`manage.py revoke_api_token`; a deactivated user's tokens stop working (docs/admin.md)."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from lab.services.credentials import API_TOKEN_KIND, api_token_create, split_prefix


def _prefix(secret: str) -> str:
    return split_prefix(secret, API_TOKEN_KIND)


def test_tokens__list__own_tokens_without_secrets(tenant):
    api_token_create(username="alice", name="ci")
    listed = tenant.get("/tokens").json()
    assert listed["count"] == 2
    assert {item["name"] for item in listed["items"]} == {"", "ci"}
    assert all("secret" not in item and "digest" not in item for item in listed["items"])


def test_tokens__revoke_own__next_request_401(tenant):
    # Given a second token of the same user
    spare = api_token_create(username="alice").secret
    # When the first revokes the second
    response = tenant.delete(f"/tokens/{_prefix(spare)}")
    # Then the second is refused at once, the first still works
    assert response.status_code == 204
    tenant_with_spare = type(tenant)(token=spare, client=tenant.client)
    assert tenant_with_spare.get("/products").status_code == 401
    assert tenant.get("/products").status_code == 200
    revoked = [i for i in tenant.get("/tokens").json()["items"] if i["prefix"] == _prefix(spare)]
    assert revoked[0]["revoked_at"] is not None


def test_tokens__revoke_self__the_call_answers_then_401(tenant):
    assert tenant.delete(f"/tokens/{_prefix(tenant.token)}").status_code == 204
    assert tenant.get("/products").status_code == 401


def test_tokens__revoke_twice_or_unknown__404(tenant):
    spare = api_token_create(username="alice").secret
    assert tenant.delete(f"/tokens/{_prefix(spare)}").status_code == 204
    assert tenant.delete(f"/tokens/{_prefix(spare)}").status_code == 404
    assert tenant.delete("/tokens/nosuchprefix").status_code == 404


def test_tokens__other_users_token__404_and_still_works(tenant, other_tenant):
    response = other_tenant.delete(f"/tokens/{_prefix(tenant.token)}")
    assert response.status_code == 404
    assert tenant.get("/products").status_code == 200


def test_revoke_command__by_prefix_or_whole_token__401_after(tenant):
    out = StringIO()
    call_command("revoke_api_token", tenant.token, stdout=out)
    assert f"revoked token {_prefix(tenant.token)} of user 'alice'" in out.getvalue()
    assert tenant.get("/products").status_code == 401


def test_revoke_command__every_token_of_a_user(tenant, other_tenant):
    api_token_create(username="alice")
    out = StringIO()
    call_command("revoke_api_token", "--user", "alice", stdout=out)
    assert out.getvalue().count("revoked token") == 2
    assert tenant.get("/products").status_code == 401
    assert other_tenant.get("/products").status_code == 200


@pytest.mark.django_db
def test_revoke_command__unknown__error_and_nothing_changed(tenant):
    with pytest.raises(CommandError, match="no live token"):
        call_command("revoke_api_token", "nosuchprefix")
    with pytest.raises(CommandError, match="one of the two"):
        call_command("revoke_api_token")
    assert tenant.get("/products").status_code == 200


def test_user_deactivated__tokens_401_client_keys_keep_deciding(tenant, product):
    # Given a product with a client key and an experiment
    tenant.post("/products/widget/experiments", {"key": "etch", "variants": [{"key": "a"}]})
    key = tenant.post("/products/widget/client-keys", {"name": "line"}).json()["secret"]
    # When the user is deactivated
    get_user_model().objects.filter(username="alice").update(is_active=False)
    # Then the admin API refuses their tokens
    assert tenant.get("/products").status_code == 401
    # And production keeps deciding with the product's client keys (documented)
    decided = tenant.client.post(
        "/api/v1/decide",
        data='{"unit": "SN-1"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert decided.status_code == 200
    assert decided.json()["variants"] == {"etch": "a"}
