"""API tokens (admin) and client keys (decide): random secrets, stored as SHA-256 digests.

A credential reads `<kind>_<prefix>_<secret>`: `kind` is `lab` (API token) or `lck` (client
key), `prefix` 12 lowercase hexadecimal digits, `secret` 43 characters of the URL-safe base64
alphabet (`A-Z a-z 0-9 - _`, what `secrets.token_urlsafe(32)` makes): 60 ASCII characters in
all. Anything else (another byte, length or kind) is not a credential: `split_prefix` refuses
it before any lookup, so the database and a worker's memory only ever see this syntax.

The prefix is stored in clear to find the row with one indexed lookup; only the digest of the
whole string is kept, and digests are compared as bytes in constant time. SHA-256 rather than a
slow password hash: these are 256-bit random secrets, not passwords, and decide checks one on
every request.
"""

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from lab.errors import NotFound
from lab.models import ApiToken, ClientKey, Product

API_TOKEN_KIND = "lab"
CLIENT_KEY_KIND = "lck"
PREFIX_HEX_DIGITS = 12
SECRET_BYTES = 32
# secrets.token_urlsafe(n): base64url of n random bytes, without padding.
SECRET_LENGTH = math.ceil(SECRET_BYTES * 4 / 3)
_CREDENTIAL = re.compile(
    rf"(?P<kind>{API_TOKEN_KIND}|{CLIENT_KEY_KIND})_(?P<prefix>[0-9a-f]{{{PREFIX_HEX_DIGITS}}})"
    rf"_[A-Za-z0-9_-]{{{SECRET_LENGTH}}}",
    re.ASCII,
)
# Length of `_<prefix>_<secret>`, after the kind.
_LENGTH_AFTER_KIND = PREFIX_HEX_DIGITS + SECRET_LENGTH + 2


@dataclass(frozen=True)
class IssuedSecret:
    """A freshly made credential: the only moment its secret is known in clear."""

    row: ApiToken | ClientKey
    secret: str


def digest(secret: str) -> str:
    """The stored form of a credential: its SHA-256, in hexadecimal."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret(kind: str) -> tuple[str, str]:
    prefix = secrets.token_hex(PREFIX_HEX_DIGITS // 2)
    return prefix, f"{kind}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def split_prefix(secret: object, kind: str) -> str | None:
    """The prefix of a credential of `kind`, or None for anything that is not one (any other
    type, byte, length or kind): nothing malformed goes further than this."""
    if not isinstance(secret, str) or len(secret) != len(kind) + _LENGTH_AFTER_KIND:
        return None
    parsed = _CREDENTIAL.fullmatch(secret)
    if parsed is None or parsed["kind"] != kind:
        return None
    return parsed["prefix"]


def matches(row_digest: str, secret: str) -> bool:
    """Whether `secret` is the credential stored as `row_digest`, in constant time.

    The digests are compared as bytes: hmac.compare_digest refuses a str that is not ASCII
    (a TypeError, not a False), and a stored digest is no input to trust."""
    return hmac.compare_digest(row_digest.encode("utf-8"), digest(secret).encode("ascii"))


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
    trigger on client keys makes every worker forget what it remembered (decide.memory), so
    the next request with it answers 401."""
    updated = ClientKey.objects.filter(product=product, id=key_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise NotFound(f"no client key {key_id} in product {product.key!r}")
