"""Targeting: unit attributes, experiment conditions, schedules and layer slots.

Pure Python, no Django, no I/O: the admin API validates with it at write time, the config
compiles conditions with it once per config version, and decide evaluates the compiled
conditions per unit. The rules are the public contract of docs/decide.md ("Targeting,
schedules and layers") and docs/decide-vectors.md ("Targeting vectors"):

- **Attributes** are a JSON object of at most 50 names matching
  ``^[A-Za-z_][A-Za-z0-9_.-]{0,63}$``; each value a string (at most 256 characters), a finite
  number, a boolean, or a list of at most 100 strings (each at most 256 characters).
- **Conditions** are ``{"attribute", "operator", "values"}`` objects that must all hold.
  ``in`` / ``not_in`` compare the attribute's text (numbers by their JSON text, booleans as
  ``true`` / ``false``; for a list, any element) with ``values``; ``str_*`` take one string
  and apply to string attributes only; ``num_*`` take one number and apply to numbers only;
  ``semver_*`` take one SemVer 2.0.0 version and compare by SemVer precedence (an attribute
  that is not valid SemVer fails); ``exists`` / ``not_exists`` take no values. A missing
  attribute satisfies only ``not_in`` and ``not_exists``; a value of the wrong type fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import semver

__all__ = [
    "ATTRIBUTE_NAME_PATTERN",
    "MAX_ATTRIBUTES",
    "MAX_CONDITIONS",
    "MAX_LIST_ITEMS",
    "MAX_NUMBER",
    "MAX_STRING_LENGTH",
    "OPERATORS",
    "CompiledCondition",
    "LayerSlot",
    "Schedule",
    "TargetingError",
    "all_hold",
    "attribute_text",
    "check_attributes",
    "compile_conditions",
    "number_text",
    "parse_semver",
]

ATTRIBUTE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)
MAX_ATTRIBUTES = 50
MAX_STRING_LENGTH = 256
MAX_LIST_ITEMS = 100
MAX_CONDITIONS = 50
MAX_IN_VALUES = 1_000
# An attribute's number is at most this in magnitude (JavaScript's largest safe integer): a
# larger one comes back from PostgreSQL's jsonb written out in full (-3.4e+38 as a 39-digit
# integer), which is neither the JSON text conditions compare nor an integer JSON encoders
# take.
MAX_NUMBER = 2**53 - 1

Attributes = Mapping[str, object]


class TargetingError(ValueError):
    """Attributes or conditions that break the rules; the message says which one and why."""


# --- attributes -----------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_problem(value: str) -> str | None:
    if len(value) > MAX_STRING_LENGTH:
        return f"a string of at most {MAX_STRING_LENGTH} characters is expected"
    if "\x00" in value:
        return "text may not contain NUL characters"
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        return "text may not contain unpaired surrogates"
    return None


def attribute_value_problem(value: object) -> str | None:
    """Why `value` cannot be an attribute value, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _string_problem(value)
    if _is_number(value):
        if not math.isfinite(value):
            return "a number must be finite"
        if abs(value) > MAX_NUMBER:
            return f"a number is between -{MAX_NUMBER} and {MAX_NUMBER}"
        return None
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            return f"a list holds at most {MAX_LIST_ITEMS} strings, this one has {len(value)}"
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"item {index} of the list is not a string"
            if problem := _string_problem(item):
                return f"item {index} of the list: {problem}"
        return None
    return "a value is a string, a finite number, a boolean or a list of strings"


def check_attributes(attributes: object) -> dict[str, object]:
    """Validate unit attributes; return them as a plain dict (lists copied).

    Raises TargetingError naming the first bad attribute.
    """
    if not isinstance(attributes, Mapping):
        raise TargetingError("attributes must be a JSON object")
    if len(attributes) > MAX_ATTRIBUTES:
        raise TargetingError(
            f"at most {MAX_ATTRIBUTES} attributes per unit, these are {len(attributes)}"
        )
    checked: dict[str, object] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
            raise TargetingError(
                f"attribute {name!r}: a name matches {ATTRIBUTE_NAME_PATTERN} "
                "(a letter or _, then up to 63 letters, digits, _ . -)"
            )
        if problem := attribute_value_problem(value):
            raise TargetingError(f"attribute {name!r}: {problem}")
        checked[name] = list(value) if isinstance(value, list) else value
    return checked


def attribute_text(value: object) -> str | list[str]:
    """The text `in` / `not_in` compare: a string as is, a boolean as ``true`` / ``false``,
    a list element by element, and a number by its JSON text as JavaScript's
    ``JSON.stringify`` writes it (ECMAScript Number::toString): ``3`` for both ``3`` and
    ``3.0``, ``2.5``, ``0.0000015``, ``1e-7``, ``1e+21``. Every SDK language can produce
    that text, so a client evaluating locally agrees with Lab."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return value
    return number_text(value)


def number_text(value: int | float) -> str:
    """ECMAScript Number::toString of a finite number (an int of 21 digits or fewer is
    written exactly; JavaScript itself would round one beyond 2**53)."""
    if isinstance(value, int) and abs(value) < 10**21:
        return str(value)
    value = float(value)
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr is the shortest representation that round-trips; Decimal splits it exactly.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        power = n - 1
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"
    return sign + text


# --- SemVer ---------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def parse_semver(text: str) -> semver.Version | None:
    """The SemVer 2.0.0 version `text` is, or None (no leading ``v``, no missing parts)."""
    if not isinstance(text, str) or len(text) > MAX_STRING_LENGTH:
        return None
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def _semver_compare(left: semver.Version, right: semver.Version) -> int:
    # Version.compare implements SemVer 2.0.0 §11 precedence and ignores build metadata.
    return left.compare(right)


# --- conditions -----------------------------------------------------------------------------

_SET_OPERATORS = ("in", "not_in")
_STRING_OPERATORS = ("str_contains", "str_starts_with", "str_ends_with")
_NUMBER_OPERATORS = ("num_eq", "num_gt", "num_gte", "num_lt", "num_lte")
_SEMVER_OPERATORS = ("semver_eq", "semver_gt", "semver_gte", "semver_lt", "semver_lte")
_PRESENCE_OPERATORS = ("exists", "not_exists")
OPERATORS = (
    _SET_OPERATORS + _STRING_OPERATORS + _NUMBER_OPERATORS + _SEMVER_OPERATORS + _PRESENCE_OPERATORS
)

_ORDER_TESTS: dict[str, Callable[[int], bool]] = {
    "eq": lambda c: c == 0,
    "gt": lambda c: c > 0,
    "gte": lambda c: c >= 0,
    "lt": lambda c: c < 0,
    "lte": lambda c: c <= 0,
}
_MISSING = object()


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One condition, checked once and ready to test attributes without parsing anything."""

    attribute: str
    operator: str
    values: tuple
    test: Callable[[object], bool]  # called with the attribute's value, or _MISSING

    def holds(self, attributes: Attributes) -> bool:
        return self.test(attributes.get(self.attribute, _MISSING))

    def as_data(self) -> dict:
        """The condition as the admin API stores and shows it."""
        return {"attribute": self.attribute, "operator": self.operator, "values": list(self.values)}


def all_hold(conditions: Sequence[CompiledCondition], attributes: Attributes) -> bool:
    for condition in conditions:
        if not condition.test(attributes.get(condition.attribute, _MISSING)):
            return False
    return True


def compile_conditions(conditions: object) -> tuple[CompiledCondition, ...]:
    """Check and compile an experiment's conditions (a list of objects).

    Raises TargetingError whose message starts with ``condition {index}:``.
    """
    if conditions is None:
        return ()
    if not isinstance(conditions, list | tuple):
        raise TargetingError("conditions must be a list of condition objects")
    if len(conditions) > MAX_CONDITIONS:
        raise TargetingError(f"at most {MAX_CONDITIONS} conditions, these are {len(conditions)}")
    compiled = []
    for index, condition in enumerate(conditions):
        try:
            compiled.append(_compile_one(condition))
        except TargetingError as exc:
            raise TargetingError(f"condition {index}: {exc}") from None
    return tuple(compiled)


def _compile_one(condition: object) -> CompiledCondition:
    if not isinstance(condition, Mapping):
        raise TargetingError('a condition is an object {"attribute", "operator", "values"}')
    unknown = sorted(set(condition) - {"attribute", "operator", "values"})
    if unknown:
        raise TargetingError(f"unknown field {unknown[0]!r}")
    attribute = condition.get("attribute")
    if not isinstance(attribute, str) or not _ATTRIBUTE_NAME.fullmatch(attribute):
        raise TargetingError(f"attribute {attribute!r} is not an attribute name")
    operator = condition.get("operator")
    if operator not in OPERATORS:
        raise TargetingError(f"unknown operator {operator!r} (one of {', '.join(OPERATORS)})")
    values = condition.get("values", [])
    if not isinstance(values, list | tuple):
        raise TargetingError("values must be a list")
    values = tuple(values)
    test = _BUILDERS[operator](operator, values)
    return CompiledCondition(attribute, operator, values, test)


def _one_value(operator: str, values: tuple) -> object:
    if len(values) != 1:
        raise TargetingError(f"{operator} takes exactly one value, got {len(values)}")
    return values[0]


def _build_set(operator: str, values: tuple) -> Callable[[object], bool]:
    if not values:
        raise TargetingError(f"{operator} takes at least one value")
    if len(values) > MAX_IN_VALUES:
        raise TargetingError(f"{operator} takes at most {MAX_IN_VALUES} values")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TargetingError(
                f"value {index} ({value!r}) is not a string: {operator} compares text "
                '(write "3" to match the number 3, "true" for the boolean)'
            )
    wanted = frozenset(values)
    negate = operator == "not_in"

    def test(value: object) -> bool:
        if value is _MISSING:
            return negate
        text = attribute_text(value)
        found = any(item in wanted for item in text) if isinstance(text, list) else text in wanted
        return found != negate

    return test


def _build_str(operator: str, values: tuple) -> Callable[[object], bool]:
    value = _one_value(operator, values)
    if not isinstance(value, str):
        raise TargetingError(f"{operator} takes a string, got {value!r}")
    method = {
        "str_contains": str.__contains__,
        "str_starts_with": str.startswith,
        "str_ends_with": str.endswith,
    }[operator]

    def test(attribute: object) -> bool:
        return isinstance(attribute, str) and method(attribute, value)

    return test


def _build_num(operator: str, values: tuple) -> Callable[[object], bool]:
    value = _one_value(operator, values)
    if not _is_number(value) or not math.isfinite(value):
        raise TargetingError(f"{operator} takes a finite number, got {value!r}")
    order = _ORDER_TESTS[operator.removeprefix("num_")]

    def test(attribute: object) -> bool:
        if not _is_number(attribute) or not math.isfinite(attribute):
            return False
        # Compared exactly (int with float included), as Python compares numbers.
        return order((attribute > value) - (attribute < value))

    return test


def _build_semver(operator: str, values: tuple) -> Callable[[object], bool]:
    value = _one_value(operator, values)
    version = parse_semver(value) if isinstance(value, str) else None
    if version is None:
        raise TargetingError(
            f"{operator} takes a SemVer 2.0.0 version such as 2.3.0 or 1.0.0-rc.1, got {value!r}"
        )
    order = _ORDER_TESTS[operator.removeprefix("semver_")]

    def test(attribute: object) -> bool:
        if not isinstance(attribute, str):
            return False
        parsed = parse_semver(attribute)
        return parsed is not None and order(_semver_compare(parsed, version))

    return test


def _build_presence(operator: str, values: tuple) -> Callable[[object], bool]:
    if values:
        raise TargetingError(f"{operator} takes no values")
    present = operator == "exists"

    def test(attribute: object) -> bool:
        return (attribute is not _MISSING) == present

    return test


_BUILDERS: dict[str, Callable[[str, tuple], Callable[[object], bool]]] = {
    **dict.fromkeys(_SET_OPERATORS, _build_set),
    **dict.fromkeys(_STRING_OPERATORS, _build_str),
    **dict.fromkeys(_NUMBER_OPERATORS, _build_num),
    **dict.fromkeys(_SEMVER_OPERATORS, _build_semver),
    **dict.fromkeys(_PRESENCE_OPERATORS, _build_presence),
}


# --- schedule and layer slot ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """``[start, end)`` in seconds since the epoch; either end may be open (None)."""

    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise TargetingError("start_at must be before end_at")

    def active(self, now: float) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(frozen=True, slots=True)
class LayerSlot:
    """The share ``[start, end)`` of a layer's hash space an experiment owns."""

    salt: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.start < self.end <= 1.0):
            raise TargetingError("layer_range must be [start, end) with 0 <= start < end <= 1")

    def contains(self, position: float) -> bool:
        return self.start <= position < self.end

    def overlaps(self, start: float, end: float) -> bool:
        return self.start < end and start < self.end
