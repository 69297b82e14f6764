"""Cheaper pieces standing for ninja's, checked against ninja's own on any input: the client
key read straight from the WSGI environ (decide.auth, for decide's view, OFREP's router and
the hot path) instead of ninja's HttpBearer and APIKeyHeader over `request.headers`, and
decide's body validated once by a plain pydantic twin of DecideIn (decide.schemas
.validation_twin, the hot path) instead of ninja's Schema. A difference would refuse a key
ninja accepts, or let the hot path answer where Django refuses."""

import pytest
from django.http import HttpRequest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyBase
from pydantic import ValidationError

from decide.auth import ClientKeyAuth, ClientKeyHeader, api_key_credential, bearer_credential
from decide.schemas import DecideIn, DecideInBody, validation_twin
from lab.schema_types import InputSchema

KEY = "lck_963b5e8bb600_5l7pe6F03I3uNbcVXUsMGJ6ItpWMpzMoh983aqc4s6I"

# What a header can hold: any byte, as gunicorn hands it over (latin-1), and values near a
# real key's (scheme case, spaces, what follows the key).
any_bytes = st.binary(max_size=120).map(lambda raw: raw.decode("latin-1"))
near_key = st.builds(
    lambda scheme, space, key, tail: scheme + space + key + tail,
    st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearer:", ""]),
    st.sampled_from([" ", "  ", "", "\t"]),
    st.sampled_from([KEY, KEY[:-1], KEY.upper(), "lck__x", ""]),
    st.sampled_from(["", " ", " x", "\x00", "é"]),
)
header_values = any_bytes | near_key


def _request(meta: dict) -> HttpRequest:
    request = HttpRequest()
    request.META = meta
    return request


@settings(max_examples=300, deadline=None)
@given(value=header_values)
@example(value=f"Bearer {KEY}")
@example(value=f"bearer  {KEY}")
@example(value="Bearer")
def test_bearer_credential__same_as_client_key_auth(value):
    meta = {"HTTP_AUTHORIZATION": value}
    ninja = HttpBearer.__call__(ClientKeyAuth(), _request(dict(meta)))
    assert bearer_credential(meta) == ClientKeyAuth()(_request(dict(meta))) == ninja


@settings(max_examples=200, deadline=None)
@given(value=header_values)
@example(value=KEY)
@example(value="")
def test_api_key_credential__same_as_client_key_header(value):
    meta = {"HTTP_X_API_KEY": value}
    ninja = APIKeyBase.__call__(ClientKeyHeader(), _request(dict(meta)))
    assert api_key_credential(meta) == ClientKeyHeader()(_request(dict(meta))) == ninja


def test_credentials__absent_header__none_like_ninja():
    assert bearer_credential({}) is None is HttpBearer.__call__(ClientKeyAuth(), _request({}))
    assert api_key_credential({}) is None is APIKeyBase.__call__(ClientKeyHeader(), _request({}))
    assert bearer_credential({"HTTP_AUTHORIZATION": f"Bearer {KEY}"}).secret == KEY


def _outcome(model, body):
    try:
        return "accepted", model.model_validate(body).model_dump()
    except ValidationError:
        return "refused", None


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Values each field accepts or nearly accepts, beside anything JSON can hold.
units = st.sampled_from(["SN-1", "", " SN", "a/b", "x" * 128, "x" * 129, "é", "\x07"])
experiments = st.sampled_from([["etch"], [], ["etch", "etch"], ["Etch!"], ["a" * 65], None])
attributes = st.sampled_from(
    [
        {"line": "A"},
        {"line": 3, "ok": True, "tags": ["a", "b"]},
        {"bad name": 1},
        {"x": 2**53},
        {"x": 1.5},
        {"x": None},
        {},
        None,
    ]
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "unit": units | json_values,
        "experiments": experiments | json_values,
        "step": st.sampled_from(["deposition", "", "Bad Step"]) | json_values,
        "attributes": attributes | json_values,
        "other": json_values,
    },
)


@settings(max_examples=500, deadline=None)
@given(body=bodies)
@example(body={"unit": "SN-1"})
@example(body={"unit": "SN-1", "experiments": ["etch"], "step": "etch", "attributes": {"a": 1}})
@example(body={"unit": "SN-1", "unknown": 1})
def test_decide_in_body__accepts_refuses_and_makes_what_decide_in_does(body):
    assert _outcome(DecideInBody, body) == _outcome(DecideIn, body)


@pytest.mark.parametrize("body", [["SN-1"], "SN-1", None, 3])
def test_decide_in_body__not_an_object__refused_by_both(body):
    assert _outcome(DecideInBody, body) == _outcome(DecideIn, body) == ("refused", None)


def test_validation_twin__schema_with_a_validator_of_its_own__refused():
    from pydantic import field_validator

    class Checked(InputSchema):
        unit: str

        @field_validator("unit")
        @classmethod
        def _upper(cls, value):
            return value.upper()

    with pytest.raises(TypeError, match="validators of its own"):
        validation_twin(Checked)
