"""Regular two-level fractional factorial designs and the run of a unit (docs/designs.md).

A design of ``k`` two-level factors in ``runs = 2**n`` runs is a set of ``k`` distinct non-zero
columns of GF(2)^n: factor ``j``'s level in run ``r`` (1-based, standard order) is the parity of
``column[j] & (r - 1)`` — 0 is the factor's control, 1 its other variant. The first ``n``
factors are the base factors (columns 1, 2, 4, …, so factor A changes fastest and run 1 has
every factor at its control); each further factor is a product of base factors, its generator.
A word of the defining relation is a set of factors whose columns add up to zero, so the
defining relation, the word length pattern, the resolution and the aliases all follow from
the columns.

``search_minimum_aberration(k, runs)`` finds the fraction of maximum resolution and, among those,
minimum aberration (Fries & Hunter 1980): the lexicographically smallest word length pattern
(A3, A4, …, Ak). It is an exact branch-and-bound over the sets of generators, not a copy of a
table; the published catalogues are its test (tests/rules/test_designs.py). Its answers are
frozen in rules.design_table, which ``minimum_aberration`` serves.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import mmh3
import numpy as np

from rules.design_table import GENERATORS

LETTERS = "ABCDEFGHJKLMNOP"  # I is skipped: it names the identity of the defining relation
MIN_FACTORS = 2
MAX_FACTORS = len(LETTERS)
MAX_RUNS = 128


class DesignError(ValueError):
    """A design that cannot be built; the message names what is wrong."""


def allowed_runs(factors: int) -> list[int]:
    """The run sizes of a design of ``factors`` factors: powers of two from factors + 1 up to
    min(2**factors, 128)."""
    top = min(2**factors, MAX_RUNS)
    return [2**n for n in range(1, 8) if factors + 1 <= 2**n <= top]


def check_size(factors: int, runs: int) -> None:
    if not MIN_FACTORS <= factors <= MAX_FACTORS:
        raise DesignError(f"a design has {MIN_FACTORS} to {MAX_FACTORS} factors, got {factors}")
    if runs not in allowed_runs(factors):
        choices = ", ".join(map(str, allowed_runs(factors)))
        raise DesignError(f"runs for {factors} factors must be one of {choices}, got {runs}")


def effect_name(mask: int) -> str:
    """Letters of the factors in a bit mask over the factors (bit j = factor j)."""
    return "".join(LETTERS[j] for j in range(mask.bit_length()) if mask >> j & 1)


def _effect_order(mask: int) -> tuple[int, list[int]]:
    return mask.bit_count(), [j for j in range(mask.bit_length()) if mask >> j & 1]


def run_of(salt: str, value: str, runs: int) -> int:
    """The run (1 … runs) of a unit, or of its randomize_by value:
    ``floor(mmh3(f"{salt}:{value}") / 2**32 * runs) + 1``, computed in integers (runs is a
    power of two, so the product is exact and equal to the floating-point formula)."""
    h = mmh3.hash(f"{salt}:{value}", seed=0, signed=False)
    return (h * runs >> 32) + 1


@dataclass(frozen=True)
class Fraction:
    """A regular 2^(k-p) fraction: ``columns[j]`` is factor j's column over the base factors."""

    runs: int
    columns: tuple[int, ...]

    @property
    def factors(self) -> int:
        return len(self.columns)

    @property
    def base(self) -> int:
        return self.runs.bit_length() - 1

    @classmethod
    def full(cls, factors: int) -> Fraction:
        return cls(2**factors, tuple(1 << j for j in range(factors)))

    @classmethod
    def from_generators(cls, factors: int, runs: int, generators: list[str]) -> Fraction:
        """Rebuild a fraction from its generators (``["D=AB", "E=AC"]``)."""
        check_size(factors, runs)
        base = runs.bit_length() - 1
        if len(generators) != factors - base:
            raise DesignError(f"{factors} factors in {runs} runs need {factors - base} generators")
        columns = [1 << j for j in range(base)]
        for expected, generator in zip(LETTERS[base:factors], generators, strict=True):
            letter, _, product = generator.partition("=")
            if letter != expected or not product:
                raise DesignError(f"generator {generator!r} must read {expected}=<base factors>")
            column = 0
            for char in product:
                index = LETTERS.find(char)
                if not 0 <= index < base or column >> index & 1:
                    raise DesignError(f"generator {generator!r}: {char!r} is not a base factor")
                column |= 1 << index
            if column.bit_count() < 2 or column in columns:
                raise DesignError(f"generator {generator!r} repeats a column")
            columns.append(column)
        return cls(runs, tuple(columns))

    @property
    def generators(self) -> list[str]:
        return [
            f"{LETTERS[self.base + i]}={effect_name(column)}"
            for i, column in enumerate(self.columns[self.base :])
        ]

    @functools.cached_property
    def words(self) -> tuple[int, ...]:
        """The 2**p - 1 words other than I, as bit masks over the factors, shortest first."""
        base = self.base
        generators = [column | 1 << (base + i) for i, column in enumerate(self.columns[base:])]
        words = set()
        for size in range(1, len(generators) + 1):
            for subset in itertools.combinations(generators, size):
                word = 0
                for generator in subset:
                    word ^= generator
                words.add(word)
        return tuple(sorted(words, key=_effect_order))

    @property
    def defining_relation(self) -> list[str]:
        return [effect_name(word) for word in self.words]

    @property
    def word_length_pattern(self) -> list[int]:
        """[A3, A4, …, Ak]: the number of words of each length."""
        pattern = [0] * (self.factors + 1)
        for word in self.words:
            pattern[word.bit_count()] += 1
        return pattern[3:]

    @property
    def resolution(self) -> int | None:
        """The length of the shortest word; None for a full factorial (no word)."""
        return min((word.bit_count() for word in self.words), default=None)

    def aliased_with(self, effect: int, max_order: int = 3) -> list[int]:
        """The effects of at most ``max_order`` factors aliased with ``effect``."""
        found = {effect ^ word for word in self.words}
        found = [mask for mask in found if mask.bit_count() <= max_order]
        return sorted(found, key=_effect_order)

    @property
    def aliases(self) -> dict[str, list[str]]:
        """Every main effect and two-factor interaction → its aliases of at most 3 factors."""
        effects = [1 << j for j in range(self.factors)]
        effects += [1 << a | 1 << b for a, b in itertools.combinations(range(self.factors), 2)]
        return {
            effect_name(effect): [effect_name(other) for other in self.aliased_with(effect)]
            for effect in effects
        }

    def effect_column(self, effect: int) -> int:
        """The column over the base factors of an effect (a product of factors)."""
        column = 0
        for j in range(self.factors):
            if effect >> j & 1:
                column ^= self.columns[j]
        return column

    @property
    def chains(self) -> list[tuple[int, list[int]]]:
        """The alias chains the runs can estimate, one per non-zero column (the intercept
        excluded): (term, aliases), the term a lowest-order member of the chain (first by
        letters among equals) and the aliases its other members of at most three factors;
        main effects first, then by order."""
        terms: dict[int, int] = {}
        for order in range(1, self.factors + 1):
            for combo in itertools.combinations(range(self.factors), order):
                mask = sum(1 << j for j in combo)
                column = self.effect_column(mask)
                if column:  # column 0 is a word: the intercept's chain
                    terms.setdefault(column, mask)
            if len(terms) == self.runs - 1:
                break
        chains = [
            (term, [mask for mask in self.aliased_with(term) if mask != term])
            for term in terms.values()
        ]
        return sorted(chains, key=lambda chain: _effect_order(chain[0]))

    def level(self, run: int, factor: int) -> int:
        """0 (control) or 1 (the other variant) of a factor in a run (1-based)."""
        return (self.columns[factor] & (run - 1)).bit_count() & 1

    @property
    def runs_table(self) -> list[tuple[int, ...]]:
        """Standard order: row r - 1 holds every factor's level (0/1) in run r."""
        return [
            tuple(self.level(run, j) for j in range(self.factors))
            for run in range(1, self.runs + 1)
        ]


@functools.cache
def minimum_aberration(factors: int, runs: int) -> Fraction:
    """The fraction of maximum resolution and minimum aberration (module docstring), as the
    search found it once (rules.design_table): the largest sizes take the search minutes."""
    check_size(factors, runs)
    if runs == 2**factors:
        return Fraction.full(factors)
    return Fraction.from_generators(factors, runs, list(GENERATORS[factors, runs]))


@functools.cache
def search_minimum_aberration(factors: int, runs: int) -> Fraction:
    """The exact search behind rules.design_table (module docstring)."""
    check_size(factors, runs)
    if runs == 2**factors:
        return Fraction.full(factors)
    base = runs.bit_length() - 1
    for resolution in range(factors, 2, -1):
        found = _search(factors, base, resolution)
        if found is not None:
            return Fraction(runs, tuple(1 << j for j in range(base)) + found)
    raise AssertionError("runs >= factors + 1 always admits a resolution III fraction")


@functools.cache
def _coordinate_permutations(n: int) -> np.ndarray:
    """Row s maps every vector of GF(2)^n to its image under the s-th permutation of the
    coordinates (relabelling the base factors, which keeps the word length pattern)."""
    vectors = np.arange(1 << n)
    rows = []
    for perm in itertools.permutations(range(n)):
        image = np.zeros(1 << n, dtype=np.int64)
        for source, target in enumerate(perm):
            image |= ((vectors >> source) & 1) << target
        rows.append(image)
    return np.array(rows)


def _search(k: int, n: int, resolution: int) -> tuple[int, ...] | None:
    """The added columns of a minimum aberration design among those of resolution at least
    ``resolution``, when none of higher resolution exists; None when there is none.

    Depth-first over sets of added columns taken in one fixed order (by weight, then value),
    with three exact cuts:
    - words: ``counts[s, v]`` is the number of s-subsets of the chosen columns summing to v,
      so adding column c creates ``counts[L - 1, c]`` words of length L; a column creating a
      word shorter than ``resolution`` is never a candidate;
    - bound: every column still to add creates at least its words with the columns chosen, so
      the pattern can only reach (current + the smallest such counts, length by length); a
      branch whose bound is not lexicographically below the best pattern found is cut;
    - symmetry: relabelling the base factors keeps the pattern, so only the representative
      whose sorted columns are lexicographically smallest is searched: each next column is
      the smallest of its orbit under the relabellings that fix the columns already chosen.
      And since no design of higher resolution exists, the design has a word of length
      ``resolution``; taking resolution - 1 of its factors into the base makes an added
      column of weight resolution - 1, which is then the first column.
    """
    p = k - n
    size = 1 << n
    order = sorted(
        (c for c in range(1, size) if c.bit_count() >= max(2, resolution - 1)),
        key=lambda c: (c.bit_count(), c),
    )
    candidates = np.array(order, dtype=np.int64)
    rank = np.full(size, len(order), dtype=np.int64)
    rank[candidates] = np.arange(len(order))
    shifted = np.arange(size)[None, :] ^ np.arange(size)[:, None]
    permutations = _coordinate_permutations(n)
    counts = np.zeros((k + 1, size), dtype=np.int64)
    counts[0, 0] = 1
    for i in range(n):
        counts[1:] += counts[:-1, shifted[1 << i]]
    first = (1 << (resolution - 1)) - 1
    weights = np.array([c.bit_count() for c in range(size)])
    best: list = [None, None]
    chosen: list[int] = []

    def finish(counts, rest, positions, words, cap):
        """need == 2: every pair of remaining columns, its pattern computed exactly."""
        first_of, second_of = np.triu_indices(len(positions), 1)
        one, two = rest[positions[first_of]], rest[positions[second_of]]
        both = one ^ two
        # Two new columns make a shorter word with a subset of the chosen ones.
        fine = (counts[: resolution - 2, both] == 0).all(axis=0)
        if not fine.any():
            return
        one, two, both = one[fine], two[fine], both[fine]
        patterns = counts[2:k, one] + counts[2:k, two] + counts[1 : k - 1, both]
        patterns += words[:, None]
        if cap is not None:
            keep = patterns[resolution - 3] <= cap
            if not keep.any():
                return
            one, two, patterns = one[keep], two[keep], patterns[:, keep]
        winner = np.lexsort(patterns[::-1])[0]
        pattern = tuple(patterns[:, winner].tolist())
        if best[0] is None or pattern < best[0]:
            best[0], best[1] = pattern, (*chosen, int(one[winner]), int(two[winner]))

    def descend(counts, start, words, stabilizer, cap):
        need = p - len(chosen)
        rest = candidates[start:]
        created = counts[:, rest]
        allowed = (created[1 : resolution - 1] == 0).all(axis=0)
        if allowed.sum() < need:
            return
        if best[0] is not None:
            lengths = created[2:k, allowed]
            if need > 1:
                least = np.partition(lengths, need - 1, axis=1)[:, :need].sum(axis=1)
            else:
                least = lengths.min(axis=1)
            if tuple((least + words).tolist()) >= best[0]:
                return
        if len(stabilizer) > 1:
            images = rank[permutations[stabilizer][:, rest]].min(axis=0)
            allowed &= images == np.arange(start, start + len(rest))
        positions = np.flatnonzero(allowed)
        if not chosen:
            positions = positions[rest[positions] == first]
        if need == 2 and len(stabilizer) == 1:
            finish(
                counts,
                rest,
                np.flatnonzero((created[1 : resolution - 1] == 0).all(axis=0)),
                words,
                cap,
            )
            return
        positions = positions[positions <= len(rest) - need]
        if not len(positions):
            return
        patterns = map(tuple, (created[2:k, positions].T + words).tolist())
        for pattern, position in sorted(zip(patterns, positions.tolist(), strict=True)):
            if best[0] is not None and pattern >= best[0]:
                break
            if cap is not None and pattern[resolution - 3] > cap:
                continue
            column = int(rest[position])
            if need == 1:
                best[0], best[1] = pattern, (*chosen, column)
                continue
            # With two words of length 4, a basis holding three letters of each makes two
            # added columns of weight 3 (docs/designs.md, "The generator"): the second column
            # is one unless the design has at most one such word.
            next_cap = cap
            if len(chosen) == 1 and resolution == 4 and weights[column] > 3:
                next_cap = 1
            grown = counts.copy()
            grown[1:] += counts[:-1, shifted[column]]
            chosen.append(column)
            kept = stabilizer[permutations[stabilizer, column] == column]
            descend(grown, start + position + 1, np.array(pattern), kept, next_cap)
            chosen.pop()

    descend(counts, 0, np.zeros(k - 2, dtype=np.int64), np.arange(len(permutations)), None)
    return best[1]
