"""The generator of regular fractions (rules/designs.py, docs/designs.md).

References: the published catalogue of minimum aberration designs (tests/data/designs, from
FrF2's ``catlg``: Chen, Sun & Wu 1993; Block & Mee 2005), a brute force over every set of
generators for up to 9 factors, and the definitions themselves (a word is a product of factors
whose column is constant; the generalized word length pattern of the ±1 table).
"""

import csv
import itertools
import math
from pathlib import Path

import mmh3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.design_table import GENERATORS
from rules.designs import (
    LETTERS,
    DesignError,
    Fraction,
    allowed_runs,
    effect_name,
    minimum_aberration,
    run_of,
    search_minimum_aberration,
)

CATALOGUE = Path(__file__).parents[1] / "data" / "designs" / "frf2_catlg_first.csv"


def catalogue_rows():
    with CATALOGUE.open() as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


def catalogue_fraction(row) -> Fraction:
    runs = int(row["runs"])
    base = runs.bit_length() - 1
    columns = tuple(1 << j for j in range(base))
    return Fraction(runs, columns + tuple(int(c) for c in row["generator_columns"].split()))


def test_catalogue__covers_every_fraction_up_to_15_factors_and_128_runs():
    listed = {(int(row["factors"]), int(row["runs"])) for row in catalogue_rows()}
    fractions = {(k, runs) for k in range(2, 16) for runs in allowed_runs(k) if runs < 2**k}
    assert listed == fractions


@pytest.mark.parametrize("row", catalogue_rows(), ids=lambda row: f"{row['factors']}-{row['runs']}")
def test_minimum_aberration__matches_the_published_catalogue(row):
    # Given the catalogue's minimum aberration design for (factors, runs)
    factors, runs = int(row["factors"]), int(row["runs"])
    listed = [int(a) for a in row["wlp_from_a3"].split()]
    published = catalogue_fraction(row)
    assert published.word_length_pattern[: len(listed)] == listed[: factors - 2]

    # When Lab generates the fraction
    fraction = minimum_aberration(factors, runs)

    # Then it has the catalogue's resolution and whole word length pattern (isomorphic
    # designs share them; the letters may differ)
    assert fraction.factors == factors and fraction.runs == runs
    assert fraction.resolution == int(row["resolution"])
    assert fraction.word_length_pattern == published.word_length_pattern


@pytest.mark.parametrize("factors", range(2, 8))
def test_minimum_aberration__full_factorial_has_no_word(factors):
    fraction = minimum_aberration(factors, 2**factors)
    assert fraction.defining_relation == []
    assert fraction.resolution is None
    assert fraction.word_length_pattern == [0] * (factors - 2)
    assert fraction.generators == []


def brute_force_pattern(factors: int, base: int, added: tuple[int, ...]) -> list[int]:
    """The word length pattern by enumerating the products of the generators (Gray code)."""
    generators = [column | 1 << (base + i) for i, column in enumerate(added)]
    pattern = [0] * (factors + 1)
    word = 0
    for step in range(1, 2 ** len(generators)):
        word ^= generators[(step & -step).bit_length() - 1]
        pattern[word.bit_count()] += 1
    return pattern[3:]


# Every fraction of up to 9 factors whose brute force stays within seconds.
BRUTE_FORCE = [
    (k, runs)
    for k in range(3, 10)
    for runs in allowed_runs(k)
    if runs < 2**k
    and math.comb(runs - 1 - (runs.bit_length() - 1), k - runs.bit_length() + 1) <= 30_000
]


@pytest.mark.parametrize("factors,runs", BRUTE_FORCE, ids=lambda v: str(v))
def test_minimum_aberration__agrees_with_a_brute_force_over_every_generator_set(factors, runs):
    # Given every set of distinct generators (products of at least two base factors)
    base = runs.bit_length() - 1
    products = [c for c in range(1, runs) if c.bit_count() >= 2]
    best = min(
        brute_force_pattern(factors, base, added)
        for added in itertools.combinations(products, factors - base)
    )

    # When Lab generates the fraction, then it reaches the least pattern in lexicographic
    # order (maximum resolution, then minimum aberration)
    fraction = minimum_aberration(factors, runs)
    assert fraction.word_length_pattern == best
    assert fraction.resolution == next(length for length, a in enumerate(best, 3) if a)


def test_brute_force_cases__include_every_run_size_up_to_9_factors():
    assert {runs for _, runs in BRUTE_FORCE} == {4, 8, 16, 32, 64, 128}
    assert max(k for k, _ in BRUTE_FORCE) == 9


def test_seven_factors_in_8_runs__is_the_saturated_resolution_iii_fraction():
    # pyDOE issue 153: fracfact_by_res(7, 3) gave 16 runs; the 2^(7-4) has 8.
    fraction = minimum_aberration(7, 8)
    assert fraction.runs == 8 and fraction.resolution == 3
    assert fraction.word_length_pattern == [7, 7, 0, 0, 1]
    assert fraction.generators == ["D=AB", "E=AC", "F=BC", "G=ABC"]
    assert fraction.aliases["A"] == ["BD", "CE", "FG", "BCG", "BEF", "CDF", "DEG"]


def test_half_fraction_of_five_factors__is_resolution_v_with_the_textbook_aliases():
    # Montgomery, Design and Analysis of Experiments: 2^(5-1) with I = ABCDE.
    fraction = minimum_aberration(5, 16)
    assert fraction.generators == ["E=ABCD"]
    assert fraction.defining_relation == ["ABCDE"]
    assert fraction.resolution == 5
    assert fraction.aliases["A"] == [] and fraction.aliases["AB"] == ["CDE"]


# --- properties of any regular fraction ------------------------------------------------------


@st.composite
def fractions(draw):
    runs = draw(st.sampled_from([4, 8, 16, 32]))
    base = runs.bit_length() - 1
    products = [c for c in range(1, runs) if c.bit_count() >= 2]
    added = draw(st.lists(st.sampled_from(products), unique=True, max_size=min(6, len(products))))
    return Fraction(runs, tuple(1 << j for j in range(base)) + tuple(added))


def signs(fraction: Fraction) -> np.ndarray:
    return 2 * np.array(fraction.runs_table) - 1


@settings(max_examples=150, deadline=None)
@given(fractions())
def test_defining_relation__is_closed_under_multiplication(fraction):
    words = set(fraction.words)
    assert len(words) == 2 ** (fraction.factors - fraction.base) - 1
    for a, b in itertools.combinations(words, 2):
        assert a ^ b in words


@settings(max_examples=150, deadline=None)
@given(fractions())
def test_words__are_the_products_whose_column_is_constant(fraction):
    # A word's product of ±1 columns is the same in every run; no other product is.
    x = signs(fraction)
    words = set(fraction.words)
    for size in range(1, fraction.factors + 1):
        for combo in itertools.combinations(range(fraction.factors), size):
            product = np.prod(x[:, combo], axis=1)
            mask = sum(1 << j for j in combo)
            assert (abs(product.sum()) == fraction.runs) == (mask in words)


@settings(max_examples=100, deadline=None)
@given(fractions())
def test_word_length_pattern__equals_the_generalized_pattern_of_the_table(fraction):
    # Generalized word length pattern (Xu & Wu 2001): A_j = sum over j-sets of (mean product)^2.
    x = signs(fraction)
    expected = [
        round(
            sum(
                np.prod(x[:, combo], axis=1).mean() ** 2
                for combo in itertools.combinations(range(fraction.factors), j)
            )
        )
        for j in range(3, fraction.factors + 1)
    ]
    assert fraction.word_length_pattern == expected


@settings(max_examples=150, deadline=None)
@given(fractions())
def test_aliases__of_each_effect_are_consistent(fraction):
    words = set(fraction.words)
    letters = {name: j for j, name in enumerate(LETTERS)}

    def mask(name):
        return sum(1 << letters[char] for char in name)

    table = fraction.aliases
    for effect, aliases in table.items():
        for alias in aliases:
            # the product of an effect and its alias is a word, and the alias lists it back
            assert mask(effect) ^ mask(alias) in words
            assert len(alias) <= 3
            if alias in table:
                assert effect in table[alias]
    for j in range(fraction.factors):
        chain = {mask(a) for a in table[LETTERS[j]]}
        expected = {(1 << j) ^ w for w in words if ((1 << j) ^ w).bit_count() <= 3}
        assert chain == expected


@settings(max_examples=150, deadline=None)
@given(fractions())
def test_runs_table__is_balanced_and_orthogonal_in_standard_order(fraction):
    x = signs(fraction)
    assert (x[0] == -1).all()  # run 1: every factor at its control
    assert (x.sum(axis=0) == 0).all()
    assert (x.T @ x == fraction.runs * np.eye(fraction.factors)).all()
    for j in range(fraction.base):  # base factor j alternates in blocks of 2**j
        assert list(x[:, j]) == [(-1) ** (1 + (r >> j & 1)) for r in range(fraction.runs)]


@settings(max_examples=100, deadline=None)
@given(fractions())
def test_chains__partition_the_effects_the_runs_can_estimate(fraction):
    chains = fraction.chains
    assert len(chains) == fraction.runs - 1
    x = signs(fraction)
    columns = [
        np.prod(x[:, [j for j in range(fraction.factors) if term >> j & 1]], axis=1)
        for term, _ in chains
    ]
    model = np.column_stack([np.ones(fraction.runs), *columns])
    assert (model.T @ model == fraction.runs * np.eye(fraction.runs)).all()
    orders = [term.bit_count() for term, _ in chains]
    assert orders == sorted(orders)


@settings(max_examples=60, deadline=None)
@given(fractions())
def test_generators__rebuild_the_same_fraction(fraction):
    rebuilt = Fraction.from_generators(fraction.factors, fraction.runs, fraction.generators)
    assert rebuilt == fraction


@pytest.mark.parametrize(
    "generators,problem",
    [
        (["D=AB"], "need 2 generators"),
        (["D=AB", "F=AC"], "must read E="),
        (["D=AB", "E=AX"], "not a base factor"),
        (["D=AB", "E=AB"], "repeats a column"),
        (["D=AB", "E=A"], "repeats a column"),
    ],
)
def test_from_generators__names_what_is_wrong(generators, problem):
    with pytest.raises(DesignError, match=problem):
        Fraction.from_generators(5, 8, generators)


@pytest.mark.parametrize("factors,runs", [(1, 2), (16, 32), (3, 2), (3, 16), (8, 256), (5, 12)])
def test_minimum_aberration__refuses_sizes_out_of_range(factors, runs):
    with pytest.raises(DesignError):
        minimum_aberration(factors, runs)


def test_effect_name__skips_the_letter_i():
    assert effect_name(0b111111111) == "ABCDEFGHJ"


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40), st.sampled_from([4, 8, 16, 32, 64, 128]))
def test_run_of__is_the_contract_formula(value, runs):
    h = mmh3.hash(f"salt-1:{value}", seed=0, signed=False)
    assert run_of("salt-1", value, runs) == math.floor(h / 2**32 * runs) + 1


VECTORS_PAGE = Path(__file__).parents[2] / "docs" / "decide-vectors.md"


def design_vectors():
    text = VECTORS_PAGE.read_text(encoding="utf-8")
    body = text.split("<!-- design-vectors -->", 1)[1].split("<!-- /design-vectors -->", 1)[0]
    rows = [line for line in body.strip().splitlines() if line.startswith("|")][2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return [(unit.strip("`"), int(h), int(run), levels) for unit, h, run, levels in cells]


@pytest.mark.parametrize("value,h,run,levels", design_vectors())
def test_design_vectors__of_the_docs__hold(value, h, run, levels):
    salt = "9b2e61f04c7d3a85"
    assert mmh3.hash(f"{salt}:{value}", seed=0, signed=False) == h
    assert run_of(salt, value, 8) == run
    fraction = minimum_aberration(7, 8)
    assert fraction.generators == ["D=AB", "E=AC", "F=BC", "G=ABC"]
    assert "".join("+" if x else "−" for x in fraction.runs_table[run - 1]) == levels


def test_design_vectors__cover_several_runs():
    assert len({run for _, _, run, _ in design_vectors()}) >= 5


# The sizes whose exact search takes more than a few seconds of one core; the catalogue test
# still checks what the frozen table serves for them.
SEARCH_TOO_SLOW = {(14, 64), (15, 64), (15, 128)}
FRACTIONS = [(k, runs) for k in range(2, 16) for runs in allowed_runs(k) if runs < 2**k]


def test_frozen_table__holds_every_fraction_smaller_than_the_full_factorial():
    assert sorted(GENERATORS) == FRACTIONS


@pytest.mark.parametrize(
    ("factors", "runs"), [size for size in FRACTIONS if size not in SEARCH_TOO_SLOW]
)
def test_search__finds_the_fraction_of_the_frozen_table(factors, runs):
    assert search_minimum_aberration(factors, runs).generators == list(GENERATORS[factors, runs])
