"""The syntax of Lab's credentials (API tokens and client keys) and how a stored one is
compared: random secrets, stored as SHA-256 digests.

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


def digest(secret: str) -> str:
    """The stored form of a credential: its SHA-256, in hexadecimal."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(kind: str) -> tuple[str, str]:
    """A new credential of `kind`: its prefix and the whole string."""
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
