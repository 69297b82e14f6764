"""Targeting (schedule, layers, conditions, attributes): the contract of docs/decide-vectors.md.

Three checks of one contract:
- the published vectors (read from docs/decide-vectors.md itself, so the page and the engine
  cannot drift apart);
- an independent implementation of the rules, written here from the page without importing
  the engine, that must agree with the engine on random experiments, units and attributes;
- properties the rules promise (a layer never gives one unit two experiments, a unit's answer
  never depends on another unit's attributes, a stored assignment wins whatever happens).

Why this module is long: the independent implementation is half of the check, and it
covers the whole page.
"""

import itertools
import math
import re
from decimal import Decimal
from pathlib import Path

import mmh3
import orjson
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from rules.bucketing import (
    bucket_position,
    compile_experiment,
    decide_one,
    layer_position,
    randomization_key,
)
from rules.targeting import (
    MAX_NUMBER,
    LayerSlot,
    Schedule,
    TargetingError,
    check_attributes,
    compile_conditions,
    number_text,
)
from rules.vocabulary import Reason

VECTORS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "decide-vectors.md"
LAYER_SALT = "4e1a9c7d2b6f8035"
STATUS_ENABLED, STATUS_DISABLED, STATUS_REMOVED = "enabled", "disabled", "removed"
property_settings = settings(max_examples=300, deadline=None)


def _table(marker: str) -> list[list[str]]:
    text = VECTORS_PAGE.read_text(encoding="utf-8")
    body = text.split(f"<!-- {marker} -->", 1)[1].split(f"<!-- /{marker} -->", 1)[0]
    rows = [line for line in body.strip().splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


LAYER_VECTORS = [
    (_code(unit), int(h), float(y), experiment)
    for unit, h, y, experiment in _table("layer-vectors")
]
MISSING = object()
OPERATOR_VECTORS = [
    (
        MISSING if value == "—" else orjson.loads(_code(value)),
        _code(operator),
        orjson.loads(_code(values)),
        {"yes": True, "no": False}[holds],
    )
    for value, operator, values, holds in _table("operator-vectors")
]


# An independent implementation of the rules, from docs/decide-vectors.md ------------------

# The regular expression suggested by the SemVer 2.0.0 specification (semver.org).
REF_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def ref_semver(text):
    if not isinstance(text, str) or text.endswith("\n"):
        return None
    match = REF_SEMVER.match(text)
    if not match or not text.isascii():
        return None
    major, minor, patch, pre, _build = match.groups()
    return (int(major), int(minor), int(patch)), (pre.split(".") if pre else None)


def ref_semver_cmp(a, b) -> int:
    if a[0] != b[0]:
        return -1 if a[0] < b[0] else 1
    pa, pb = a[1], b[1]
    if pa is None or pb is None:
        return 0 if pa is pb else (1 if pa is None else -1)
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


def ref_number_text(x) -> str:
    if isinstance(x, int) and abs(x) < 10**21:
        return str(x)
    x = float(x)
    if x == 0:
        return "0"
    # The fewest significant digits that round-trip; of several such, the closest to x, and
    # of two equally close, the even one (ECMAScript Number::toString, step 5).
    exact = Decimal(abs(x))
    for precision in range(1, 18):
        mantissa, exponent = f"{abs(x):.{precision - 1}e}".split("e")
        scaled = int(mantissa.replace(".", ""))
        power = int(exponent) - (precision - 1)
        candidates = [
            m for m in (scaled - 1, scaled, scaled + 1) if m > 0 and float(f"{m}e{power}") == abs(x)
        ]
        if candidates:
            best = min(candidates, key=lambda m: (abs(Decimal(m).scaleb(power) - exact), m % 2))
            break
    digits = str(best).rstrip("0")
    exponent = power + len(str(best)) - 1
    n = int(exponent) + 1
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if n > 0 else "-")
        out += str(abs(n - 1))
    return ("-" if x < 0 else "") + out


def ref_text(value):
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    return [ref_number_text(value)]


def is_num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


ORDER = {"eq": 0, "gt": 1, "gte": 2, "lt": 3, "lte": 4}


def ref_order(name: str, c: int) -> bool:
    return [c == 0, c > 0, c >= 0, c < 0, c <= 0][ORDER[name]]


def ref_holds(condition: dict, attributes: dict) -> bool:
    op, values = condition["operator"], condition.get("values", [])
    if condition["attribute"] not in attributes:
        return op in ("not_in", "not_exists")
    value = attributes[condition["attribute"]]
    if op in ("in", "not_in"):
        found = any(text in values for text in ref_text(value))
        return found if op == "in" else not found
    if op == "exists":
        return True
    if op == "not_exists":
        return False
    family, _, name = op.partition("_")
    if family == "str":
        if not isinstance(value, str):
            return False
        wanted = values[0]
        return {
            "contains": wanted in value,
            "starts_with": value[: len(wanted)] == wanted,
            "ends_with": len(wanted) == 0 or value[-len(wanted) :] == wanted,
        }[name]
    if family == "num":
        if not is_num(value):
            return False
        return ref_order(name, (value > values[0]) - (value < values[0]))
    parsed, wanted = ref_semver(value), ref_semver(values[0])
    return parsed is not None and ref_order(name, ref_semver_cmp(parsed, wanted))


def ref_position(salt: str, unit: str) -> float:
    return mmh3.hash(f"{salt}:{unit}".encode(), 0, False) / 2**32


def ref_decide(experiment: dict, unit: str, stored, attributes: dict, now: float):
    """Variant key or None, by rules 0-3 of docs/decide-vectors.md."""
    start, end = experiment["schedule"]
    if (start is not None and now < start) or (end is not None and now >= end):
        return None
    statuses = {key: status for key, status, _ in experiment["variants"]}
    if stored is not None and statuses.get(stored, STATUS_REMOVED) != STATUS_REMOVED:
        return stored
    if experiment["layer"] is not None:
        salt, s, e = experiment["layer"]
        if not s <= ref_position(salt, unit) < e:
            return None
    if not all(ref_holds(c, attributes) for c in experiment["conditions"]):
        return None
    eligible = [
        (k, w) for k, status, w in experiment["variants"] if status == STATUS_ENABLED and w > 0
    ]
    total = 0.0
    for _, w in eligible:
        total += w
    x = ref_position(experiment["salt"], unit)
    running = 0.0
    for key, w in eligible:
        if running / total <= x < (running + experiment["coverage"] * w) / total:
            return key
        running += w
    return None


def engine_decide(experiment: dict, unit: str, stored, attributes: dict, now: float):
    ids = {key: i + 1 for i, (key, _, _) in enumerate(experiment["variants"])}
    start, end = experiment["schedule"]
    compiled = compile_experiment(
        id=1,
        key="e",
        salt=experiment["salt"],
        coverage=experiment["coverage"],
        variants=[(ids[k], k, status, w) for k, status, w in experiment["variants"]],
        schedule=Schedule(start, end) if (start, end) != (None, None) else None,
        layer=LayerSlot(*experiment["layer"]) if experiment["layer"] else None,
        conditions=compile_conditions(experiment["conditions"]),
    )
    decision = decide_one(compiled, unit, ids.get(stored) if stored else None, attributes, now)
    return compiled.variant_keys_by_id[decision.variant_id] if decision.variant_id else None


# Published vectors ------------------------------------------------------------------------


@pytest.mark.parametrize(("unit", "h", "y", "experiment"), LAYER_VECTORS)
def test_layer_vector__published_hash_position_and_experiment(unit, h, y, experiment):
    # Given a layer shared by etch-time [0, 0.5) and etch-chem [0.5, 1)
    slots = {
        "etch-time": LayerSlot(LAYER_SALT, 0.0, 0.5),
        "etch-chem": LayerSlot(LAYER_SALT, 0.5, 1),
    }
    # When the unit's layer position is computed
    position = layer_position(LAYER_SALT, unit)
    # Then it is the published one, and exactly one experiment's slot holds it
    assert mmh3.hash(f"{LAYER_SALT}:{unit}".encode(), 0, False) == h
    assert position == y == h / 2**32 == ref_position(LAYER_SALT, unit)
    assert [key for key, slot in slots.items() if slot.contains(position)] == [experiment]


@pytest.mark.parametrize(("value", "operator", "values", "holds"), OPERATOR_VECTORS)
def test_operator_vector__engine_and_reference_agree_with_the_page(value, operator, values, holds):
    condition = {"attribute": "a", "operator": operator, "values": values}
    attributes = {} if value is MISSING else {"a": value}
    [compiled] = compile_conditions([condition])
    assert compiled.holds(attributes) is holds
    assert ref_holds(condition, attributes) is holds


def test_operator_vectors__cover_every_operator():
    from rules.targeting import OPERATORS

    assert {operator for _, operator, _, _ in OPERATOR_VECTORS} == set(OPERATORS)


def test_semver__published_chain__is_strictly_increasing_in_engine_and_reference():
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
    ]
    for i, low in enumerate(chain):
        for high in chain[i + 1 :]:
            [lt] = compile_conditions(
                [{"attribute": "v", "operator": "semver_lt", "values": [high]}]
            )
            [gt] = compile_conditions(
                [{"attribute": "v", "operator": "semver_gt", "values": [high]}]
            )
            assert lt.holds({"v": low}) and not gt.holds({"v": low}), (low, high)
            assert ref_semver_cmp(ref_semver(low), ref_semver(high)) == -1


# Write-time validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "problem"),
    [
        ([{"attribute": "line", "operator": "equals", "values": ["3"]}], "unknown operator"),
        ([{"attribute": "fw", "operator": "semver_gte", "values": ["2.3"]}], "SemVer"),
        ([{"attribute": "fw", "operator": "semver_gte", "values": ["v2.3.0"]}], "SemVer"),
        ([{"attribute": "n", "operator": "num_gt", "values": ["2"]}], "finite number"),
        ([{"attribute": "n", "operator": "num_gt", "values": [True]}], "finite number"),
        ([{"attribute": "n", "operator": "num_gt", "values": [1, 2]}], "exactly one value"),
        ([{"attribute": "line", "operator": "in", "values": []}], "at least one value"),
        ([{"attribute": "line", "operator": "in", "values": [3]}], "not a string"),
        ([{"attribute": "s", "operator": "str_contains", "values": [3]}], "takes a string"),
        ([{"attribute": "s", "operator": "exists", "values": ["x"]}], "no values"),
        ([{"attribute": "9line", "operator": "exists"}], "attribute name"),
        ([{"attribute": "line", "operator": "exists", "value": 1}], "unknown field"),
        (["line == 3"], "is an object"),
    ],
)
def test_conditions__malformed__error_names_the_index_and_problem(conditions, problem):
    good = {"attribute": "line", "operator": "in", "values": ["3"]}
    with pytest.raises(TargetingError) as error:
        compile_conditions([good, *conditions])
    assert str(error.value).startswith("condition 1: ")
    assert problem in str(error.value)


# Attributes (docs/decide.md, "Targeting") ----------------------------------------------------

attribute_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
safe_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=256
)
attribute_values = st.one_of(
    safe_text,
    st.integers(min_value=-MAX_NUMBER, max_value=MAX_NUMBER),
    st.floats(min_value=-MAX_NUMBER, max_value=MAX_NUMBER),
    st.booleans(),
    st.lists(safe_text, max_size=100),
)


@property_settings
@given(attributes=st.dictionaries(attribute_names, attribute_values, max_size=50))
def test_attributes__within_the_rules__accepted_unchanged(attributes):
    assert check_attributes(attributes) == attributes


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ({"9line": "3"}, "'9line'"),
        ({"line 3": "3"}, "'line 3'"),
        ({"x" * 65: "3"}, "x" * 65),
        ({"": "3"}, "''"),
        ({"line": "x" * 257}, "'line'"),
        ({"line": None}, "'line'"),
        ({"line": {"nested": 1}}, "'line'"),
        ({"line": math.nan}, "'line'"),
        ({"line": math.inf}, "'line'"),
        ({"tags": ["a", 3]}, "'tags'"),
        ({"tags": ["a"] * 101}, "'tags'"),
        ({"tags": ["x" * 257]}, "'tags'"),
        ({"line": "nul\x00"}, "'line'"),
        ({f"a{i}": i for i in range(51)}, "at most 50"),
    ],
)
def test_attributes__breaking_a_rule__error_names_the_attribute(attributes, named):
    with pytest.raises(TargetingError) as error:
        check_attributes(attributes)
    assert named in str(error.value)


@property_settings
@given(value=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()))
# x.75 between two 16-digit candidates equally close: JavaScript writes the even one (.8).
@example(value=562949953421312.75)
def test_number_text__engine_and_reference_agree(value):
    assert number_text(value) == ref_number_text(value)


# Engine against the independent implementation ---------------------------------------------

ATTRIBUTE_POOL = ["line", "lot", "fw", "n", "tags"]
STRING_POOL = ["3", "4", "B", "std", "2.3.0", "1.0.0-rc.1", "1.0.0", "2.10.0", "v2.3.0", "line-3"]
SEMVER_POOL = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "2.3.0"]
NUMBER_POOL = [0, 1, 2, 2.5, 3, 3.0, -1, 1e-7, 1e21]

pool_values = st.one_of(
    st.sampled_from(STRING_POOL),
    st.sampled_from(SEMVER_POOL),
    st.sampled_from(NUMBER_POOL),
    st.booleans(),
    st.lists(st.sampled_from(STRING_POOL), max_size=3),
)
pool_attributes = st.dictionaries(st.sampled_from(ATTRIBUTE_POOL), pool_values, max_size=5)


@st.composite
def conditions(draw):
    attribute = draw(st.sampled_from(ATTRIBUTE_POOL))
    operator = draw(
        st.sampled_from(
            ["in", "not_in", "str_contains", "str_starts_with", "str_ends_with"]
            + [f"num_{o}" for o in ORDER]
            + [f"semver_{o}" for o in ORDER]
            + ["exists", "not_exists"]
        )
    )
    if operator in ("in", "not_in"):
        values = draw(
            st.lists(
                st.one_of(st.sampled_from(STRING_POOL), st.sampled_from(["true", "false", "2.5"])),
                min_size=1,
                max_size=3,
            )
        )
    elif operator.startswith("str_"):
        values = [draw(st.sampled_from(["3", "line", "-", "", ".0"]))]
    elif operator.startswith("num_"):
        values = [draw(st.sampled_from(NUMBER_POOL))]
    elif operator.startswith("semver_"):
        values = [draw(st.sampled_from(SEMVER_POOL))]
    else:
        values = []
    return {"attribute": attribute, "operator": operator, "values": values}


@st.composite
def experiments(draw):
    weights = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=4))
    statuses = draw(
        st.lists(
            st.sampled_from([STATUS_ENABLED, STATUS_ENABLED, STATUS_DISABLED, STATUS_REMOVED]),
            min_size=len(weights),
            max_size=len(weights),
        )
    )
    assume(any(s == STATUS_ENABLED and w > 0 for s, w in zip(statuses, weights, strict=True)))
    layer = None
    if draw(st.booleans()):
        s = draw(st.floats(min_value=0, max_value=0.9))
        e = draw(st.floats(min_value=s, max_value=1.0, exclude_min=True))
        layer = (draw(st.sampled_from(["L1", LAYER_SALT])), s, e)
    start = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=100)))
    end = draw(st.one_of(st.none(), st.integers(min_value=101, max_value=200)))
    return {
        "salt": draw(st.sampled_from(["7f3c9a1e5b2d4680", "s2", "s3"])),
        "coverage": draw(st.sampled_from([1.0, 0.5, 0.25, 0.0, 0.9])),
        "variants": [
            (f"v{i}", status, float(w))
            for i, (status, w) in enumerate(zip(statuses, weights, strict=True))
        ],
        "layer": layer,
        "conditions": draw(st.lists(conditions(), max_size=3)),
        "schedule": (start, end),
    }


units = st.one_of(st.sampled_from(["SN-1", "SN-2", "lot-A7-3", "wafer-Ω-7"]), st.text(min_size=1))


@property_settings
@given(
    experiment=experiments(),
    unit=units,
    attributes=pool_attributes,
    stored=st.one_of(st.none(), st.sampled_from(["v0", "v1", "v2", "v3"])),
    now=st.integers(min_value=-10, max_value=300),
)
def test_engine__agrees_with_independent_implementation(experiment, unit, attributes, stored, now):
    assume(stored is None or int(stored[1:]) < len(experiment["variants"]))
    assert engine_decide(experiment, unit, stored, attributes, now) == ref_decide(
        experiment, unit, stored, attributes, now
    )


# Properties ---------------------------------------------------------------------------------


@property_settings
@given(
    cuts=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=5, unique=True),
    keys=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30, unique=True),
)
def test_layer__experiments_sharing_a_layer__never_share_a_unit(cuts, keys):
    # Given experiments owning consecutive slots of one layer (all at full coverage)
    bounds = sorted({0.0, 1.0, *cuts})
    slots = [LayerSlot(LAYER_SALT, s, e) for s, e in itertools.pairwise(bounds)]
    members = [
        compile_experiment(
            id=i,
            key=f"e{i}",
            salt=f"salt-{i}",
            coverage=1.0,
            variants=[
                (10 * i + 1, "a", STATUS_ENABLED, 1.0),
                (10 * i + 2, "b", STATUS_ENABLED, 1.0),
            ],
            layer=slot,
        )
        for i, slot in enumerate(slots)
    ]
    # When every unit is decided by every experiment
    for key in keys:
        answered = [e.key for e in members if decide_one(e, key, None).variant_id is not None]
        # Then exactly one experiment of the layer answers (the slots tile [0, 1))
        assert len(answered) == 1, (key, answered)


@property_settings
@given(
    experiment=experiments(),
    population=st.dictionaries(units, pool_attributes, min_size=2, max_size=6),
    changed=pool_attributes,
)
def test_answer__never_depends_on_other_units_attributes(experiment, population, changed):
    # Given a population of units deciding together
    experiment["schedule"] = (None, None)
    target, *others = list(population)

    def answers(pop):
        return {
            unit: engine_decide(experiment, unit, None, attrs, 0) for unit, attrs in pop.items()
        }

    before = answers(population)
    # When every other unit's attributes change
    after = answers({**population, **{unit: changed for unit in others}})
    # Then the target's answer is the same
    assert after[target] == before[target]


@property_settings
@given(experiment=experiments(), unit=units, attributes=pool_attributes, now=st.integers(101, 200))
def test_stored_assignment__wins_whatever_the_attributes_layer_and_conditions(
    experiment, unit, attributes, now
):
    # Given a unit stored on a variant that is not removed, inside the schedule
    live = [key for key, status, _ in experiment["variants"] if status != STATUS_REMOVED]
    experiment["schedule"] = (None, None)
    stored = live[0]
    # Then whatever its attributes, the layer slot and the conditions, it keeps its variant
    assert engine_decide(experiment, unit, stored, attributes, now) == stored


def test_schedule__outside_the_window__no_variant_and_stored_kept_for_later():
    experiment = compile_experiment(
        id=1,
        key="e",
        salt="s",
        coverage=1.0,
        variants=[(1, "a", STATUS_ENABLED, 1.0)],
        schedule=Schedule(100.0, 200.0),
    )
    assert decide_one(experiment, "SN-1", 1, now=99.0) == (None, "off_schedule")
    assert decide_one(experiment, "SN-1", 1, now=200.0) == (None, "off_schedule")
    assert decide_one(experiment, "SN-1", 1, now=100.0) == (1, "stored")
    assert decide_one(experiment, "SN-1", None, now=150.0) == (1, "hash")


def test_schedule__start_not_before_end__refused():
    with pytest.raises(TargetingError):
        Schedule(200.0, 200.0)


# Randomizing by lot -------------------------------------------------------------------------

LOT_VECTORS = [
    (
        _code(unit),
        MISSING if lot == "—" else orjson.loads(_code(lot)),
        None if text == "—" else _code(text),
        None if h == "—" else int(h),
        None if x == "—" else float(x),
        None if variant == "—" else variant,
        None if y == "—" else float(y),
    )
    for unit, lot, text, h, x, variant, y in _table("lot-vectors")
]


@pytest.mark.parametrize(("unit", "lot", "text", "h", "x", "variant", "y"), LOT_VECTORS)
def test_decide__randomized_by_lot__published_vector(unit, lot, text, h, x, variant, y):
    # Given the published experiment (salt, a:1 b:1 c:2) randomized by the attribute `lot`
    experiment = compile_experiment(
        id=1,
        key="etch",
        salt="7f3c9a1e5b2d4680",
        coverage=1.0,
        variants=[(1, "a", "enabled", 1.0), (2, "b", "enabled", 1.0), (3, "c", "enabled", 2.0)],
        randomize_by="lot",
    )
    attributes = {} if lot is MISSING else {"lot": lot}
    # When the unit is decided
    decision = decide_one(experiment, unit, None, attributes)
    # Then the lot's text is what was hashed, for the buckets and the layer
    assert randomization_key(attributes.get("lot")) == text
    if text is None:
        assert decision == (None, Reason.NOT_TARGETED)
        return
    assert mmh3.hash(f"7f3c9a1e5b2d4680:{text}".encode(), 0, False) == h
    assert bucket_position("7f3c9a1e5b2d4680", text) == x
    assert layer_position(LAYER_SALT, text) == y
    assert experiment.variant_keys_by_id[decision.variant_id] == variant
    assert decision.source == Reason.HASH


def test_decide__randomized_by_lot_in_a_layer__the_lot_decides_the_slot():
    # Given an experiment owning [0, 0.2) of the layer, randomized by lot
    experiment = compile_experiment(
        id=1,
        key="etch",
        salt="7f3c9a1e5b2d4680",
        coverage=1.0,
        variants=[(1, "a", "enabled", 1.0)],
        layer=LayerSlot(LAYER_SALT, 0.0, 0.2),
        randomize_by="lot",
    )
    # Then lot 42 (y = 0.1447) is in, lot A7 (y = 0.4120) is out, whatever the unit keys
    for unit in ("SN-1", "SN-2", "SN-3"):
        assert decide_one(experiment, unit, None, {"lot": 42}).variant_id == 1
        assert decide_one(experiment, unit, None, {"lot": "A7"}) == (None, Reason.OUTSIDE_LAYER)
