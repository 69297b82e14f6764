"""Client-key authentication for the decide API and OFREP.

`ClientKeyAuth` (and `ClientKeyHeader`) only check the syntax of the credential
(`lck_<prefix>_<secret>`, rules.credentials): anything else, whatever its bytes, length
or encoding, is refused (401) without touching the database or a worker's memory. The
lookup itself (the key's digest, revocation, its product's status and config version)
happens in the same SQL statement that reads the unit's stored assignments
(decide.store.read_units), so a warm decision costs one round trip. Every way a key can
fail there raises `InvalidClientKey`, which decide.api answers 401, like a malformed key.
"""

from typing import NamedTuple

from ninja.security import APIKeyHeader, HttpBearer

from rules.credentials import CLIENT_KEY_KIND, matches, split_prefix
from rules.credentials import digest as stored_digest


class InvalidClientKey(Exception):
    """The client key is unknown, revoked or wrong, or its product is removed (401)."""


class ClientCredential(NamedTuple):
    """A well-formed client key (ASCII, of the one syntax), not yet checked against the
    database."""

    prefix: str
    secret: str

    @property
    def digest(self) -> bytes:
        """The key's digest as stored (hexadecimal SHA-256, ASCII bytes): what to keep and
        compare (hmac.compare_digest) instead of the secret."""
        return stored_digest(self.secret).encode("ascii")

    def check(self, row_digest: str | None) -> None:
        """Raise InvalidClientKey unless `row_digest` is this key's digest."""
        if row_digest is None or not matches(row_digest, self.secret):
            raise InvalidClientKey()


def parse_client_key(token: str) -> ClientCredential | None:
    """The credential `token` is, or None when it is not a client key's syntax."""
    prefix = split_prefix(token, CLIENT_KEY_KIND)
    return ClientCredential(prefix, token) if prefix else None


def bearer_credential(meta) -> ClientCredential | None:
    """The credential of an `Authorization: Bearer` header, read from a request's WSGI environ
    (`request.META`), or None: ninja's HttpBearer reading (the scheme case-insensitive, the
    token everything after its first space) without building Django's `request.headers`
    from every header. decide's view and OFREP's router (`ClientKeyAuth`) and the hot path
    (decide/hot_path.py, which has no request object yet) read the key with it."""
    value = meta.get("HTTP_AUTHORIZATION")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != ClientKeyAuth.openapi_scheme:
        return None
    return parse_client_key(token)


def api_key_credential(meta) -> ClientCredential | None:
    """The credential of `X-API-Key`, read from the WSGI environ (`ClientKeyHeader`, the hot
    path)."""
    key = meta.get("HTTP_X_API_KEY")
    return parse_client_key(key) if key else None


class ClientKeyAuth(HttpBearer):
    """`Authorization: Bearer lck_<prefix>_<secret>`."""

    def __call__(self, request) -> ClientCredential | None:
        return bearer_credential(request.META)

    def authenticate(self, request, token: str) -> ClientCredential | None:
        return parse_client_key(token)


class ClientKeyHeader(APIKeyHeader):
    """`X-API-Key: lck_<prefix>_<secret>`, the other scheme OFREP providers send."""

    param_name = "X-API-Key"

    def __call__(self, request) -> ClientCredential | None:
        return api_key_credential(request.META)

    def authenticate(self, request, key: str | None) -> ClientCredential | None:
        return parse_client_key(key) if key else None
