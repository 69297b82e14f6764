"""The one syntax of a credential, `<kind>_<12 lowercase hex>_<43 URL-safe base64>`, and the
constant-time check of its digest (rules/credentials.py, docs/decide.md, "Authentication").

No database: these are the rules every request's credential goes through first.
"""

import base64
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rules.credentials import (
    API_TOKEN_KIND,
    CLIENT_KEY_KIND,
    digest,
    matches,
    new_secret,
    split_prefix,
)

URLSAFE = string.ascii_letters + string.digits + "-_"
KEY = "lck_0123456789ab_" + "A" * 20 + "-_" + "z9" * 10 + "q"  # well-formed, 60 characters


def test_key_used_below__is_well_formed():
    assert (len(KEY), split_prefix(KEY, CLIENT_KEY_KIND)) == (60, "0123456789ab")


@settings(max_examples=200)
@given(kind=st.sampled_from([API_TOKEN_KIND, CLIENT_KEY_KIND]), _=st.integers())
def test_issued_credential__parses_as_its_own_kind_only(kind, _):
    # Given a credential as issued (secrets.token_urlsafe: any of its 64 characters)
    prefix, secret = new_secret(kind)
    other = CLIENT_KEY_KIND if kind == API_TOKEN_KIND else API_TOKEN_KIND
    # Then it parses as its own kind, to its prefix, and not as the other kind
    assert split_prefix(secret, kind) == prefix
    assert split_prefix(secret, other) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "lck",
        "lck__",
        KEY[:-1],  # a character short
        KEY + "A",  # a character long
        KEY + "\n",  # a regular expression's `$` would accept it
        KEY + "\x00",
        KEY[:-1] + "=",  # base64 padding
        KEY[:-1] + "+",  # standard base64, not URL-safe
        KEY[:-1] + "/",
        KEY[:-1] + "é",  # non-ASCII, same length
        KEY[:-1] + "\x7f",
        KEY[:-1] + " ",
        " " + KEY[1:],
        "lck_0123456789AB_" + KEY[17:],  # uppercase prefix
        "lck_0123456789a\uff10_" + KEY[17:],  # a fullwidth digit: `\d` outside re.ASCII
        "lck_0123456789ag_" + KEY[17:],  # not hexadecimal
        "lck_0123456789abc" + KEY[17:],  # the second separator missing
        "lck-0123456789ab_" + KEY[17:],
        "LCK_0123456789ab_" + KEY[17:],
        "lab_0123456789ab_" + KEY[17:],  # an API token is no client key
        "lck_" + "é" * 12 + "_" + KEY[17:],
        "lck_0123456789ab_" + "\u0661" * 43,  # Arabic-Indic digits: `\w` outside re.ASCII
        KEY * 1000,
        None,
        KEY.encode(),
        60,
    ],
)
def test_anything_but_the_syntax__refused(token):
    assert split_prefix(token, CLIENT_KEY_KIND) is None


@settings(max_examples=300)
@given(position=st.integers(0, 59), replacement=st.characters())
def test_well_formed_key_with_a_foreign_character__refused(position, replacement):
    allowed = (
        "_"
        if position in (3, 16)
        else (string.hexdigits.lower() if 4 <= position < 16 else URLSAFE)
    )
    if position < 3:
        allowed = CLIENT_KEY_KIND[position]
    token = KEY[:position] + replacement + KEY[position + 1 :]
    assert (split_prefix(token, CLIENT_KEY_KIND) is not None) == (replacement in allowed)


@settings(max_examples=300)
@given(token=st.one_of(st.text(), st.binary().map(lambda raw: raw.decode("latin-1"))))
@example(token="lck_0123456789ab_" + "é" * 43)
def test_any_text__accepted_only_as_60_ascii_characters_of_the_alphabet(token):
    prefix = split_prefix(token, CLIENT_KEY_KIND)
    if prefix is not None:
        kind, found, secret = token.split("_", 2)
        assert (kind, found, len(token)) == (CLIENT_KEY_KIND, prefix, 60)
        assert set(secret) <= set(URLSAFE) and len(secret) == 43


def test_secret_alphabet__is_what_token_urlsafe_makes():
    # Every byte value, in every position of a base64 group, lands in the alphabet
    encoded = base64.urlsafe_b64encode(bytes(range(256)) * 3).decode().rstrip("=")
    assert set(encoded) == set(URLSAFE)


def test_matches__right_wrong_and_an_unreadable_stored_digest():
    assert matches(digest(KEY), KEY)
    assert not matches(digest(KEY), KEY[:-1] + "B")
    # A stored digest is compared as bytes: a corrupt non-ASCII one is a mismatch, not an error
    assert not matches("é" * 64, KEY)
    assert not matches("", KEY)


def test_client_credential__parsed_with_the_stored_digest_as_bytes():
    from decide.auth import parse_client_key

    credential = parse_client_key(KEY)
    assert (credential.prefix, credential.secret) == ("0123456789ab", KEY)
    assert credential.digest == digest(KEY).encode("ascii")
    assert parse_client_key(KEY[:-1] + "é") is None
