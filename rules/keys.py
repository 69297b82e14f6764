"""The shapes of public identifiers (docs/decide.md, docs/admin.md), checked at every way in."""

import re
import unicodedata

KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_KEY = re.compile(KEY_PATTERN)
# The unit key rules of unit_key_problem, as a JSON Schema pattern for the OpenAPI documents
# (clients and validators read it; the server checks with unit_key_problem): 1-128
# characters, none of them a control character or "/", and no white space at either end.
# (Unpaired surrogates, which unit_key_problem refuses too, are left out: regular expression
# engines that work on valid Unicode, such as Rust's, cannot compile them.)
UNIT_KEY_JSON_PATTERN = r"^(?!\s)(?!.*\s$)[^/\x00-\x1f\x7f-\x9f]{1,128}$"


def is_valid_key(value: str) -> bool:
    return bool(_KEY.fullmatch(value))


def unit_key_problem(value: str) -> str | None:
    """Why `value` is not a unit key, or None when it is one.

    A unit key is 1-128 characters of any Unicode except control characters, white
    space at either end, and "/" (so it is always one URL path segment).
    """
    if not 1 <= len(value) <= 128:
        return "a unit key has 1 to 128 characters"
    if value != value.strip():
        return "a unit key may not start or end with white space"
    if "/" in value:
        return 'a unit key may not contain "/"'
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        return "a unit key may not contain control characters"
    return None
