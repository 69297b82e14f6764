"""Admin API tokens can be revoked: by their owner through the API, by an operator with
`manage.py revoke_api_token`; a deactivated user's tokens stop working; anything that is not a
live token is the one 401 (docs/admin.md)."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lab.services.credentials import api_token_create
from rules.credentials import API_TOKEN_KIND, split_prefix


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


UNAUTHORIZED = (401, b'{"detail":"missing or invalid bearer credentials"}', "Bearer")
# A header value as a WSGI server gives it: the bytes received, decoded as latin-1.
header_bytes = st.binary(max_size=200).map(lambda raw: raw.decode("latin-1"))


def _answer(tenant, authorization: str) -> tuple[int, bytes, str | None]:
    response = tenant.client.get("/api/admin/v1/products", HTTP_AUTHORIZATION=authorization)
    return response.status_code, response.content, response.get("WWW-Authenticate")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    value=st.one_of(
        header_bytes,
        st.builds(lambda tail: f"Bearer lab_{{prefix}}_{tail}", header_bytes),
        st.builds(lambda tail: f"Bearer lab_{{prefix}}_{tail}", st.text(max_size=60)),
    )
)
@example(value="Bearer lab_{prefix}_é")
@example(value="Bearer lab_{prefix}_" + "\x00" * 43)
@example(value="Bearer  lab_{prefix}_" + "x" * 43)
@example(value="Bearer lab_" + "\x00" * 12 + "_" + "x" * 43)
@example(value="Bearer")
@example(value="")
def test_any_authorization_bytes__401_same_body(tenant, value):
    # Given a live token, and a header that is not it (often with its prefix)
    value = value.replace("{prefix}", _prefix(tenant.token))
    assume(tenant.token not in value)
    # Then the admin API answers the one 401, as for no header at all
    assert _answer(tenant, value) == UNAUTHORIZED


def test_token_with_a_foreign_character__401_then_the_token_works(tenant):
    for position in range(len(tenant.token)):
        for foreign in ("é", "\x00", "\x7f", "=", "+", " "):
            forged = (tenant.token[:position] + foreign + tenant.token[position + 1 :]).encode()
            assert _answer(tenant, f"Bearer {forged.decode('latin-1')}") == UNAUTHORIZED
    assert tenant.get("/products").status_code == 200
