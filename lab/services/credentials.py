"""API tokens (admin) and client keys (decide): random secrets, stored as SHA-256 digests.

A credential reads `<kind>_<prefix>_<secret>`. The prefix is stored in clear to find the
row with one indexed lookup; only the digest of the whole string is kept, compared in
constant time. SHA-256 rather than a slow password hash: these are 256-bit random
secrets, not passwords, and decide checks one on every request.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from lab.errors import NotFound
from lab.models import ApiToken, ClientKey, Product

API_TOKEN_KIND = "lab"
CLIENT_KEY_KIND = "lck"


@dataclass(frozen=True)
class IssuedSecret:
    """A freshly made credential: the only moment its secret is known in clear."""

    row: ApiToken | ClientKey
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret(kind: str) -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    return prefix, f"{kind}_{prefix}_{secrets.token_urlsafe(32)}"


def split_prefix(secret: str, kind: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != 12:
        return None
    return parts[1]


def matches(row_digest: str, secret: str) -> bool:
    return hmac.compare_digest(row_digest, digest(secret))


def api_token_create(*, username: str, name: str = "") -> IssuedSecret:
    with transaction.atomic():
        user, _ = get_user_model().objects.get_or_create(username=username)
        prefix, secret = _new_secret(API_TOKEN_KIND)
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
    prefix, secret = _new_secret(CLIENT_KEY_KIND)
    key = ClientKey.objects.create(product=product, prefix=prefix, digest=digest(secret), name=name)
    return IssuedSecret(row=key, secret=secret)


def client_key_revoke(*, product: Product, key_id: int) -> None:
    """Revoke a key: decide checks keys in the statement that reads assignments, and the
    trigger on client keys makes every worker forget what it remembered (decide.known), so
    the next request with it answers 401."""
    updated = ClientKey.objects.filter(product=product, id=key_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise NotFound(f"no client key {key_id} in product {product.key!r}")
