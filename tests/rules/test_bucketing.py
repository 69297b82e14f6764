"""The bucketing contract of rules/bucketing.py: reference vectors, invariants and statistics.

The reference vectors are published in docs/decide.md for SDK authors; a change here is a
breaking change of the public contract.
"""

import dataclasses
import math
from collections import Counter
from itertools import pairwise

import mmh3
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from rules.bucketing import (
    CompiledExperiment,
    Decision,
    VariantRange,
    bucket_position,
    choose,
    compile_experiment,
    compile_ranges,
    decide_one,
)
from rules.vocabulary import Status

STATUS_ENABLED, STATUS_DISABLED, STATUS_REMOVED = Status.ENABLED, Status.DISABLED, Status.REMOVED

SALT = "7f3c9a1e5b2d4680"
WEIGHTED_VARIANTS = [(1, "a", 1.0), (2, "b", 1.0), (3, "c", 2.0)]
STATISTICS_P_FLOOR = 1e-4
STATISTICS_UNITS = [f"SN-{i:06d}" for i in range(20_000)]

property_settings = settings(max_examples=150, deadline=None)

# (unit key, h, x, variant at coverage 1, variant at coverage 0.5) for SALT and
# WEIGHTED_VARIANTS, whose ranges are a [0, .25) b [.25, .5) c [.5, 1) at coverage 1 and
# a [0, .125) b [.25, .375) c [.5, .75) at coverage 0.5.
REFERENCE_VECTORS = [
    ("SN-1", 4240513331, 0.9873214482795447, "c", None),
    ("SN-4", 843531810, 0.19640005426481366, "a", None),
    ("SN-11", 1954723763, 0.4551195919048041, "b", None),
    ("SN-16", 1129590300, 0.2630032366141677, "b", "b"),
    ("SN-1000", 3041987414, 0.7082678875885904, "c", "c"),
    ("lot-A7-3", 1580379345, 0.3679607401136309, "b", "b"),
    ("alice@example.com", 3577368393, 0.8329209855291992, "c", None),
    ("3f2b8c1e-9d4a-4e6b-8a7c-1d2e3f4a5b6c", 145292067, 0.03382844547741115, "a", "a"),
    ("wafer-Ω-7", 117002375, 0.027241738280281425, "a", "a"),
    ("WAFER-Ω-7", 664389089, 0.15469013922847807, "a", None),
    ("Müller-Ø", 3239613484, 0.7542812926694751, "c", None),
    ("ユニット-42", 3081854180, 0.7175500923767686, "c", "c"),
    ("🔬-batch-9", 3129404962, 0.7286213715560734, "c", "c"),
    # "Müller-1" in Unicode normalisation forms NFC (ü as one code point) and NFD (u and a
    # combining diaeresis): two unit keys, hashed as their own UTF-8 bytes.
    ("M\u00fcller-1", 1210250633, 0.28178343386389315, "b", "b"),
    ("Mu\u0308ller-1", 2644863280, 0.6158052198588848, "c", "c"),
]


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, written out from the reference algorithm (unsigned result)."""
    mask = 0xFFFFFFFF
    c1, c2 = 0xCC9E2D51, 0x1B873593

    def rotl(value: int, bits: int) -> int:
        return ((value << bits) | (value >> (32 - bits))) & mask

    def scramble(k: int) -> int:
        return (rotl((k * c1) & mask, 15) * c2) & mask

    h = seed & mask
    body_length = len(data) - len(data) % 4
    for i in range(0, body_length, 4):
        h ^= scramble(int.from_bytes(data[i : i + 4], "little"))
        h = (rotl(h, 13) * 5 + 0xE6546B64) & mask
    tail = data[body_length:]
    if tail:
        h ^= scramble(int.from_bytes(tail, "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def key_or_none(chosen: VariantRange | None) -> str | None:
    return chosen.key if chosen is not None else None


def make_experiment(
    variants: list[tuple[int, str, str, float]], coverage: float = 1.0
) -> CompiledExperiment:
    return compile_experiment(
        id=10, key="etch-time", salt=SALT, coverage=coverage, step_key="etch", variants=variants
    )


# Strategies ---------------------------------------------------------------------------------

unit_keys = st.text(min_size=1, max_size=128)
salts = st.text(min_size=1, max_size=64)
coverages = st.floats(min_value=0.0, max_value=1.0)
positions = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda h: h / 2**32),
)
weights = st.one_of(
    st.integers(min_value=0, max_value=1000).map(float),
    st.floats(min_value=0.0, max_value=1e6),
)


@st.composite
def weighted_variants(draw, min_size: int = 1) -> list[tuple[int, str, float]]:
    drawn = draw(st.lists(weights, min_size=min_size, max_size=8))
    assume(math.fsum(drawn) > 0)
    return [(i + 1, f"v{i + 1}", weight) for i, weight in enumerate(drawn)]


# Reference vectors --------------------------------------------------------------------------


@pytest.mark.parametrize(("unit_key", "h", "x", "at_full", "at_half"), REFERENCE_VECTORS)
def test_bucket__reference_vector__gives_published_hash_position_and_variant(
    unit_key, h, x, at_full, at_half
):
    # Given the published salt and weights a:1 b:1 c:2
    full = compile_ranges(WEIGHTED_VARIANTS, 1.0)
    half = compile_ranges(WEIGHTED_VARIANTS, 0.5)

    # When the unit is bucketed
    position = bucket_position(SALT, unit_key)

    # Then hash, position and variants are the published ones
    assert mmh3.hash(f"{SALT}:{unit_key}".encode(), 0, False) == h
    assert position == x == h / 2**32
    assert key_or_none(choose(full, position)) == at_full
    assert key_or_none(choose(half, position)) == at_half


@pytest.mark.parametrize(("unit_key", "h"), [(v[0], v[1]) for v in REFERENCE_VECTORS])
def test_bucket__reference_vector__matches_independent_murmur3(unit_key, h):
    data = f"{SALT}:{unit_key}".encode()

    assert murmur3_32(data) == h
    assert mmh3.mmh3_32_uintdigest(data, 0) == h


def test_bucket__published_ranges__are_the_worked_example():
    assert compile_ranges(WEIGHTED_VARIANTS, 1.0) == (
        VariantRange(1, "a", 0.0, 0.25),
        VariantRange(2, "b", 0.25, 0.5),
        VariantRange(3, "c", 0.5, 1.0),
    )
    assert compile_ranges(WEIGHTED_VARIANTS, 0.5) == (
        VariantRange(1, "a", 0.0, 0.125),
        VariantRange(2, "b", 0.25, 0.375),
        VariantRange(3, "c", 0.5, 0.75),
    )


def test_bucket__non_ascii_key__is_hashed_as_utf8_not_latin1():
    unit_key = "Müller-Ø"

    position = bucket_position(SALT, unit_key)

    assert position == murmur3_32(f"{SALT}:{unit_key}".encode()) / 2**32
    assert position != murmur3_32(f"{SALT}:{unit_key}".encode("latin-1")) / 2**32


def test_bucket__unit_key__is_case_sensitive():
    assert bucket_position(SALT, "wafer-Ω-7") != bucket_position(SALT, "WAFER-Ω-7")


def test_bucket__lone_surrogate__raises_value_error():
    with pytest.raises(ValueError):
        bucket_position(SALT, "unit-\ud800")


# Hash properties ----------------------------------------------------------------------------


@property_settings
@given(salt=salts, unit_key=unit_keys)
def test_bucket__any_unit__same_position_in_unit_interval(salt, unit_key):
    position = bucket_position(salt, unit_key)

    assert position == bucket_position(salt, unit_key)
    assert 0.0 <= position < 1.0
    assert position == murmur3_32(f"{salt}:{unit_key}".encode()) / 2**32


@property_settings
@given(data=st.binary(max_size=64))
def test_bucket__murmur3__matches_independent_implementation_for_any_bytes(data):
    assert mmh3.hash(data, 0, False) == murmur3_32(data)


# Range construction -------------------------------------------------------------------------


@property_settings
@given(variants=weighted_variants(), coverage=coverages)
def test_compile__any_weights__ranges_ordered_disjoint_and_cover_coverage(variants, coverage):
    total = math.fsum(weight for _, _, weight in variants)
    share_by_id = {variant_id: weight / total for variant_id, _, weight in variants}
    start_by_id = {
        variant_id: math.fsum(weight for _, _, weight in variants[:i]) / total
        for i, (variant_id, _, _) in enumerate(variants)
    }

    ranges = compile_ranges(variants, coverage)

    for earlier, later in pairwise(ranges):
        assert earlier.start < later.start
        assert earlier.end <= later.start
    for variant_range in ranges:
        assert 0.0 <= variant_range.start < variant_range.end <= 1.0
        assert math.isclose(variant_range.start, start_by_id[variant_range.id], abs_tol=1e-12)
        assert math.isclose(
            variant_range.end - variant_range.start,
            coverage * share_by_id[variant_range.id],
            abs_tol=1e-12,
        )
    assert math.isclose(sum(r.end - r.start for r in ranges), coverage, abs_tol=1e-9)


@property_settings
@given(variants=weighted_variants())
def test_compile__full_coverage__tiles_unit_interval_without_float_gaps(variants):
    ranges = compile_ranges(variants, 1.0)

    assert ranges[0].start == 0.0
    assert ranges[-1].end == 1.0
    for earlier, later in pairwise(ranges):
        assert earlier.end == later.start


@property_settings
@given(variants=weighted_variants(), coverage=coverages, x=positions)
def test_choose__any_position__matches_linear_scan(variants, coverage, x):
    ranges = compile_ranges(variants, coverage)

    expected = next((r for r in ranges if r.start <= x < r.end), None)

    assert choose(ranges, x) == expected


def test_choose__range__is_half_open():
    ranges = compile_ranges(WEIGHTED_VARIANTS, 0.5)

    assert key_or_none(choose(ranges, 0.25)) == "b"
    assert key_or_none(choose(ranges, math.nextafter(0.375, 0.0))) == "b"
    assert choose(ranges, 0.375) is None
    assert key_or_none(choose(ranges, 0.0)) == "a"
    assert choose(ranges, math.nextafter(1.0, 0.0)) is None


def test_compile__zero_weight_variant__owns_nothing_and_moves_no_other_start():
    ranges = compile_ranges([(1, "a", 1.0), (2, "b", 0.0), (3, "c", 1.0)], 1.0)

    assert ranges == (VariantRange(1, "a", 0.0, 0.5), VariantRange(3, "c", 0.5, 1.0))


@pytest.mark.parametrize(
    "variants", [[], [(1, "a", 0.0)], [(1, "a", 0.0), (2, "b", 0.0)]], ids=["none", "one", "two"]
)
def test_compile__no_positive_weight__gives_no_ranges(variants):
    assert compile_ranges(variants, 1.0) == ()


def test_compile__zero_coverage__gives_no_ranges():
    assert compile_ranges(WEIGHTED_VARIANTS, 0.0) == ()


@pytest.mark.parametrize("coverage", [-0.01, 1.01, math.nan, math.inf])
def test_compile__coverage_outside_unit_interval__raises_value_error(coverage):
    with pytest.raises(ValueError, match="coverage"):
        compile_ranges(WEIGHTED_VARIANTS, coverage)


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
def test_compile__negative_or_non_finite_weight__raises_value_error(weight):
    with pytest.raises(ValueError, match="weight"):
        compile_ranges([(1, "a", 1.0), (2, "b", weight)], 1.0)


# Coverage changes ---------------------------------------------------------------------------


@property_settings
@given(variants=weighted_variants(), low=coverages, high=coverages, x=positions)
def test_bucket__raising_coverage__never_moves_included_unit(variants, low, high, x):
    low, high = sorted((low, high))
    included = choose(compile_ranges(variants, low), x)
    assume(included is not None)

    after_raise = choose(compile_ranges(variants, high), x)

    assert after_raise is not None
    assert after_raise.id == included.id


@property_settings
@given(variants=weighted_variants(), low=coverages, high=coverages)
def test_compile__raising_coverage__keeps_starts_and_only_grows_ends(variants, low, high):
    low, high = sorted((low, high))
    high_by_id = {r.id: r for r in compile_ranges(variants, high)}

    for narrow in compile_ranges(variants, low):
        wide = high_by_id[narrow.id]
        assert wide.start == narrow.start
        assert wide.end >= narrow.end


# Decisions ----------------------------------------------------------------------------------

ALL_ENABLED = [
    (1, "a", STATUS_ENABLED, 1.0),
    (2, "b", STATUS_ENABLED, 1.0),
    (3, "c", STATUS_ENABLED, 2.0),
]


def test_compile_experiment__only_enabled_positive_weight_variants__get_ranges():
    experiment = make_experiment(
        [
            (1, "a", STATUS_ENABLED, 1.0),
            (2, "b", STATUS_DISABLED, 1.0),
            (3, "c", STATUS_REMOVED, 1.0),
            (4, "d", STATUS_ENABLED, 0.0),
            (5, "e", STATUS_ENABLED, 3.0),
        ]
    )

    assert experiment.ranges == (VariantRange(1, "a", 0.0, 0.25), VariantRange(5, "e", 0.25, 1.0))
    assert dict(experiment.variant_keys_by_id) == {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}
    assert experiment.removed_variant_ids == frozenset({3})


def test_compiled_experiment__is_immutable_and_hashable():
    experiment = make_experiment(ALL_ENABLED)
    same = make_experiment(ALL_ENABLED)

    assert experiment == same
    assert hash(experiment) == hash(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.coverage = 0.5
    with pytest.raises(TypeError):
        experiment.variant_keys_by_id[1] = "z"


@property_settings
@given(unit_key=unit_keys)
def test_decide__no_stored_assignment__hashes_into_ranges(unit_key):
    experiment = make_experiment(ALL_ENABLED, coverage=0.5)
    expected = choose(experiment.ranges, bucket_position(SALT, unit_key))

    decision = decide_one(experiment, unit_key, None)

    assert decision == Decision(expected.id if expected else None, "hash")


@pytest.mark.parametrize(("unit_key", "_h", "_x", "at_full", "at_half"), REFERENCE_VECTORS)
def test_decide__reference_vector__gives_published_variant(unit_key, _h, _x, at_full, at_half):
    keys_by_id = {1: "a", 2: "b", 3: "c"}

    for coverage, expected in [(1.0, at_full), (0.5, at_half)]:
        variant_id, source = decide_one(make_experiment(ALL_ENABLED, coverage), unit_key, None)
        assert keys_by_id.get(variant_id) == expected
        assert source == "hash"


@property_settings
@given(unit_key=unit_keys, stored_id=st.sampled_from([1, 2, 3]))
def test_decide__stored_variant_disabled__stays_sticky(unit_key, stored_id):
    variants = [
        (variant_id, key, STATUS_DISABLED if variant_id == stored_id else status, weight)
        for variant_id, key, status, weight in ALL_ENABLED
    ]
    experiment = make_experiment(variants)

    assert decide_one(experiment, unit_key, stored_id) == Decision(stored_id, "stored")


@property_settings
@given(unit_key=unit_keys, stored_id=st.sampled_from([1, 2, 3]), coverage=coverages)
def test_decide__stored_variant__stays_sticky_whatever_weights_and_coverage(
    unit_key, stored_id, coverage
):
    variants = [
        (variant_id, key, status, 0.0 if variant_id == stored_id else weight)
        for variant_id, key, status, weight in ALL_ENABLED
    ]
    experiment = make_experiment(variants, coverage)

    assert decide_one(experiment, unit_key, stored_id) == Decision(stored_id, "stored")


@property_settings
@given(unit_key=unit_keys, removed_id=st.sampled_from([1, 2, 3]), coverage=coverages)
def test_decide__variant_removed__rebuckets_unit_among_eligible(unit_key, removed_id, coverage):
    variants = [
        (variant_id, key, STATUS_REMOVED if variant_id == removed_id else status, weight)
        for variant_id, key, status, weight in ALL_ENABLED
    ]
    experiment = make_experiment(variants, coverage)
    eligible = [(i, k, w) for i, k, s, w in ALL_ENABLED if i != removed_id]
    expected = choose(compile_ranges(eligible, coverage), bucket_position(SALT, unit_key))

    decision = decide_one(experiment, unit_key, removed_id)

    assert decision.source == "rebucketed"
    assert decision.variant_id != removed_id
    assert decision.variant_id == (expected.id if expected else None)


def test_decide__stored_variant_unknown__rebuckets_unit():
    experiment = make_experiment(ALL_ENABLED)

    variant_id, source = decide_one(experiment, "SN-1", 999)

    assert (variant_id, source) == (3, "rebucketed")


@pytest.mark.parametrize(
    "variants",
    [
        [],
        [(1, "a", STATUS_DISABLED, 1.0), (2, "b", STATUS_REMOVED, 1.0)],
        [(1, "a", STATUS_ENABLED, 0.0)],
    ],
    ids=["no-variants", "disabled-and-removed", "zero-weight"],
)
def test_decide__zero_eligible_variants__gives_no_variant(variants):
    experiment = make_experiment(variants)

    assert decide_one(experiment, "SN-1", None) == Decision(None, "hash")


def test_decide__removed_stored_variant_and_zero_eligible__gives_no_variant():
    experiment = make_experiment([(1, "a", STATUS_REMOVED, 1.0), (2, "b", STATUS_DISABLED, 1.0)])

    assert decide_one(experiment, "SN-1", 1) == Decision(None, "rebucketed")


# Statistics over many units (deterministic keys, so the outcome is fixed) -------------------


@pytest.mark.parametrize(
    ("weights_of_variants", "coverage"),
    [([1.0, 1.0, 2.0], 1.0), ([1.0, 1.0, 2.0], 0.5), ([1.0, 9.0], 1.0), ([5.0] * 5, 0.3)],
)
def test_bucket__many_units__shares_follow_weights_and_coverage(weights_of_variants, coverage):
    variants = [(i, f"v{i}", w) for i, w in enumerate(weights_of_variants, start=1)]
    ranges = compile_ranges(variants, coverage)
    total = sum(weights_of_variants)
    expected = [len(STATISTICS_UNITS) * coverage * w / total for w in weights_of_variants]
    if coverage < 1.0:
        expected.append(len(STATISTICS_UNITS) * (1.0 - coverage))

    counts = Counter(
        key_or_none(choose(ranges, bucket_position(SALT, unit))) for unit in STATISTICS_UNITS
    )
    observed = [counts[f"v{i}"] for i in range(1, len(variants) + 1)]
    if coverage < 1.0:
        observed.append(counts[None])

    assert sum(observed) == len(STATISTICS_UNITS)
    assert stats.chisquare(observed, expected).pvalue > STATISTICS_P_FLOOR


def test_bucket__many_units__positions_are_uniform():
    positions_of_units = [bucket_position(SALT, unit) for unit in STATISTICS_UNITS]

    assert stats.kstest(positions_of_units, "uniform").pvalue > STATISTICS_P_FLOOR


def test_bucket__different_salts__assign_variants_independently():
    ranges = compile_ranges(WEIGHTED_VARIANTS, 1.0)
    other_salt = "0d9e1b7c3a5f2468"
    table = [[0] * len(ranges) for _ in ranges]
    index_by_id = {r.id: i for i, r in enumerate(ranges)}

    for unit in STATISTICS_UNITS:
        under_first = choose(ranges, bucket_position(SALT, unit))
        under_other = choose(ranges, bucket_position(other_salt, unit))
        table[index_by_id[under_first.id]][index_by_id[under_other.id]] += 1

    assert stats.chi2_contingency(table).pvalue > STATISTICS_P_FLOOR
