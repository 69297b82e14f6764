"""API tokens (admin) and client keys (decide): issued, looked up and revoked.

Their syntax, digests and constant-time comparison are rules.credentials.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from lab.errors import NotFound
from lab.models import ApiToken, ClientKey, Product
from rules.credentials import (
    API_TOKEN_KIND,
    CLIENT_KEY_KIND,
    digest,
    matches,
    new_secret,
    split_prefix,
)


@dataclass(frozen=True)
class IssuedSecret:
    """A freshly made credential: the only moment its secret is known in clear."""

    row: ApiToken | ClientKey
    secret: str


def api_token_create(*, username: str, name: str = "") -> IssuedSecret:
    with transaction.atomic():
        user, _ = get_user_model().objects.get_or_create(username=username)
        prefix, secret = new_secret(API_TOKEN_KIND)
        token = ApiToken.objects.create(user=user, prefix=prefix, digest=digest(secret), name=name)
    return IssuedSecret(row=token, secret=secret)


def api_token_revoke(*, user, prefix: str) -> ApiToken:
    """Revoke one of `user`'s tokens: the very next request with it answers 401.

    Another user's token, an unknown prefix and a token revoked already are all a 404 (a
    token's existence is nobody else's business)."""
    now = timezone.now()
    updated = ApiToken.objects.filter(user=user, prefix=prefix, revoked_at__isnull=True).update(
        revoked_at=now
    )
    if not updated:
        raise NotFound(f"no live API token {prefix!r}")
    return ApiToken.objects.get(user=user, prefix=prefix)


def api_tokens_revoke(*, prefix: str | None = None, username: str | None = None) -> list[ApiToken]:
    """Revoke the live token with `prefix`, or every live token of `username` (operators)."""
    tokens = ApiToken.objects.filter(revoked_at__isnull=True).select_related("user")
    if prefix is not None:
        tokens = tokens.filter(prefix=prefix)
    if username is not None:
        tokens = tokens.filter(user__username=username)
    with transaction.atomic():
        revoked = list(tokens.select_for_update(of=("self",)))
        ApiToken.objects.filter(id__in=[t.id for t in revoked]).update(revoked_at=timezone.now())
    return revoked


def api_token_user(secret: str):
    """The user a token belongs to, or None for anything that is not a live token."""
    prefix = split_prefix(secret, API_TOKEN_KIND)
    if prefix is None:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(prefix=prefix, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None or not matches(token.digest, secret):
        return None
    return token.user


def client_key_create(*, product: Product, name: str = "") -> IssuedSecret:
    prefix, secret = new_secret(CLIENT_KEY_KIND)
    key = ClientKey.objects.create(product=product, prefix=prefix, digest=digest(secret), name=name)
    return IssuedSecret(row=key, secret=secret)


def client_key_revoke(*, product: Product, key_id: int) -> None:
    """Revoke a key: decide checks keys in the statement that reads assignments, and the
    trigger on client keys makes every worker forget what it remembered (decide.memory), so
    the next request with it answers 401."""
    updated = ClientKey.objects.filter(product=product, id=key_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise NotFound(f"no client key {key_id} in product {product.key!r}")
