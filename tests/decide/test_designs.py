"""Decide for the factors of a design (docs/designs.md): a unit gets the levels of its run,
``run = floor(mmh3(f"{salt}:{unit or randomize_by value}") / 2^32 · runs) + 1``."""

import threading
from collections import Counter

import pytest
from django.db import connection, transaction
from django.test import Client
from scipy import stats

from lab.analysis.designs import level_code
from lab.models import Assignment, Design, DesignUnit, Variant
from lab.services.config_version import product_config_changed
from lab.services.designs import design_create, design_remove
from rules.designs import Fraction, run_of
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment

FACTORS = ["a", "b", "c", "d", "e", "f", "g"]
# The factors' steps in the fixture `stepped`: a design spans steps, a request may name one.
STEPS = {"a": "etch", "b": "etch", "c": "etch", "d": "etch", "e": "anneal"}


@pytest.fixture
def screen(decider):
    for key in FACTORS:
        make_experiment(decider.product, key, variants=(("low", 1.0), ("high", 1.0)))
    return design_create(
        product=decider.product, actor="alice", key="screen", factors=FACTORS, runs=8
    )


@pytest.fixture
def stepped(decider):
    for key in FACTORS:
        make_experiment(
            decider.product, key, variants=(("low", 1.0), ("high", 1.0)), step=STEPS.get(key)
        )
    return design_create(
        product=decider.product, actor="alice", key="screen", factors=FACTORS, runs=8
    )


def expected_levels(design: Design, value: str) -> dict[str, str]:
    fraction = Fraction.from_generators(len(FACTORS), design.runs, design.generators)
    run = run_of(design.salt, value, design.runs)
    return {
        key: ("high" if level else "low")
        for key, level in zip(FACTORS, fraction.runs_table[run - 1], strict=True)
    }


def test_decide__2000_units_under_2_7_4__fill_the_runs_and_store_their_levels(decider, screen):
    # Given a 2^(7-4) design over seven experiments
    units = [f"SN-{i:05d}" for i in range(2000)]
    # When 2,000 units are decided in two batches
    decisions = decider.batch(units[:1000]) + decider.batch(units[1000:])
    # Then every unit gets its run's level in every factor
    runs = Counter()
    for unit, decision in zip(units, decisions, strict=True):
        assert decision["variants"] == expected_levels(screen, unit)
        runs[run_of(screen.salt, unit, 8)] += 1
    # the runs are filled evenly (chi-square goodness of fit)
    assert sorted(runs) == list(range(1, 9))
    assert stats.chisquare([runs[r] for r in range(1, 9)]).pvalue > 0.001
    # and every stored assignment (7 per unit) is the level of the unit's run
    stored = Assignment.objects.filter(unit__key__in=units).values_list(
        "unit__key", "experiment__key", "variant__key", "source"
    )
    assert len(stored) == 7 * 2000
    for unit, experiment, variant_key, source in stored:
        assert variant_key == expected_levels(screen, unit)[experiment] and source == "hash"
    if connection.vendor == "postgresql":
        # and the database kept each unit's code of those levels (lab.models.DesignUnit)
        codes = DesignUnit.objects.filter(design=screen).values_list("unit__key", "code")
        assert dict(codes) == {
            unit: level_code([int(expected_levels(screen, unit)[f] == "high") for f in FACTORS])
            for unit in units
        }


def test_decide__weights_and_coverage_of_factors__are_ignored(decider, screen):
    experiment = screen.factors.get(position=0).experiment
    with transaction.atomic():
        Variant.objects.filter(experiment=experiment).update(weight=0)
        experiment.coverage = 0
        experiment.save(update_fields=["coverage"])
        product_config_changed(decider.product)
    answer = decider.decide("SN-1", experiments=["a"])
    assert answer == {"a": expected_levels(screen, "SN-1")["a"]}


def test_decide__single_and_ofrep__answer_the_run_levels(decider, screen):
    assert decider.decide("SN-7") == expected_levels(screen, "SN-7")
    flag = decider.flag("d", "SN-8")
    assert flag.status_code == 200, flag.content
    assert flag.json()["value"] == expected_levels(screen, "SN-8")["d"]


def test_decide__randomize_by_lot__every_unit_of_a_lot_gets_the_lot_run(decider):
    for key in FACTORS[:3]:
        make_experiment(decider.product, key, variants=(("low", 1.0), ("high", 1.0)))
    design = design_create(
        product=decider.product, actor="alice", key="lots", factors=FACTORS[:3], runs=4,
        randomize_by="lot",
    )  # fmt: skip
    fraction = Fraction.from_generators(3, 4, design.generators)
    for lot in ["L1", "L2", "L3", "L4", "L5"]:
        run = run_of(design.salt, lot, 4)
        expected = {
            k: "high" if level else "low"
            for k, level in zip(FACTORS[:3], fraction.runs_table[run - 1], strict=True)
        }
        for unit in range(3):
            answer = decider.decide(f"{lot}-{unit}", attributes={"lot": lot})
            assert answer == expected
    assert decider.decide("NO-LOT") == dict.fromkeys(FACTORS[:3])
    assert not Assignment.objects.filter(unit__key="NO-LOT").exists()


def test_decide__stored_assignment_is_sticky_and_removal_frees_the_factors(decider, screen):
    first = decider.decide("SN-9")
    design_remove(design=screen, actor="alice")
    assert decider.decide("SN-9") == first  # stored, sticky
    assert Assignment.objects.filter(unit__key="SN-9").count() == 7


def test_design_slot__answers_the_level_of_the_documented_vectors():
    # docs/decide-vectors.md, "Design runs": SN-3 is in run 2, levels + − − + + − +.
    from rules.bucketing import DesignSlot

    fraction = Fraction.from_generators(7, 8, ["D=AB", "E=AC", "F=BC", "G=ABC"])
    answers = [
        DesignSlot("9b2e61f04c7d3a85", 8, column, low=1, high=2).variant("SN-3", {})
        for column in fraction.columns
    ]
    assert answers == [2, 1, 1, 2, 2, 1, 2]


def test_race__first_decisions_of_a_design__store_one_row_per_factor(decider, screen):
    # Given another worker decided the unit first (its read is over: its rows are stored)
    first = decider.decide("SN-42")
    assert Assignment.objects.filter(unit__key="SN-42").count() == 7
    # When this worker decides from a read taken before that commit
    with pytest.MonkeyPatch.context() as patch:
        from decide import store

        real = store.read_units
        patch.setattr(store, "read_units", lambda c, keys: (real(c, keys)[0], {}))
        again = decider.decide("SN-42")
    # Then both answer the run's levels and each factor has exactly one row
    assert again == first == expected_levels(screen, "SN-42")
    assert Assignment.objects.filter(unit__key="SN-42").count() == 7


def _stored(unit: str) -> dict[str, tuple[str, str]]:
    rows = Assignment.objects.filter(unit__key=unit).values_list(
        "experiment__key", "variant__key", "source"
    )
    return {experiment: (variant_key, source) for experiment, variant_key, source in rows}


FILTERED_CALLS = {
    "single, one experiment": lambda d, unit: d.decide(unit, experiments=["b"]),
    "single, a step": lambda d, unit: d.decide(unit, step="anneal"),
    "batch, a step": lambda d, unit: d.batch([unit], step="etch")[0]["variants"],
    "batch, experiments": lambda d, unit: d.batch([unit], experiments=["g", "a"])[0]["variants"],
    "ofrep single": lambda d, unit: {"d": d.flag("d", unit).json()["value"]},
}


@pytest.mark.parametrize("call", FILTERED_CALLS.values(), ids=FILTERED_CALLS.keys())
def test_decide__filtered_first_decision__stores_every_factor_of_the_run(decider, stepped, call):
    # Given a 2^(7-4) design whose factors are at two steps and at none
    unit = "SN-77"
    expected = expected_levels(stepped, unit)
    # When the unit's first decision asks for some of its factors only
    answer = call(decider, unit)
    # Then the answer lists what was asked, at the run's levels
    assert answer == {key: expected[key] for key in answer}
    assert len(answer) < len(FACTORS)
    # and every factor's level of the run is stored (source hash)
    assert _stored(unit) == {key: (level, "hash") for key, level in expected.items()}


def test_decide__ofrep_bulk__stores_every_factor_of_the_run(decider, stepped):
    response = decider.post("/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "SN-78"}})
    assert response.status_code == 200, response.content
    expected = expected_levels(stepped, "SN-78")
    assert _stored("SN-78") == {key: (level, "hash") for key, level in expected.items()}


def test_decide__paused_factor__is_not_stored_with_the_run(decider, stepped):
    # Given factor f is paused
    paused = stepped.factors.get(position=5).experiment
    decider.change(paused, status="disabled")
    # When a unit gets the level of factor a
    decider.decide("SN-79", experiments=["a"])
    # Then the enabled factors' levels are stored, not the paused one's
    expected = expected_levels(stepped, "SN-79")
    assert _stored("SN-79") == {
        key: (level, "hash") for key, level in expected.items() if key != "f"
    }


@pytest.mark.django_db(transaction=True)
def test_race__concurrent_filtered_first_decisions__store_one_row_per_factor_of_one_run(
    decider, stepped
):
    requires_postgres()
    # Given four workers deciding the same new units at once: one asks for step etch,
    # one for step anneal, one for factor g alone and one for everything
    units = [f"SN-R{i:03d}" for i in range(40)]
    filters = [{"step": "etch"}, {"step": "anneal"}, {"experiments": ["g"]}, {}]
    barrier = threading.Barrier(len(filters))
    rows_after_answer: list[tuple[str, int]] = []
    failures: list[object] = []

    def worker(selection: dict) -> None:
        client = Client()
        try:
            barrier.wait()
            for unit in units:
                response = client.post(
                    "/api/v1/decide",
                    {"unit": unit, **selection},
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {decider.secret}",
                )
                if response.status_code != 200:
                    failures.append(response.content)
                    continue
                expected = expected_levels(stepped, unit)
                variants = response.json()["variants"]
                if variants != {key: expected[key] for key in variants}:
                    failures.append((unit, variants))
                # Once any answer is out, the whole run is stored
                count = Assignment.objects.filter(unit__key=unit).count()
                rows_after_answer.append((unit, count))
        except Exception as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(f,)) for f in filters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every answer was its run's level, the run was whole as soon as anything was
    # answered, and each factor has exactly one row, all of the unit's one run
    assert failures == []
    assert len(rows_after_answer) == len(units) * len(filters)
    assert {count for _, count in rows_after_answer} == {len(FACTORS)}
    for unit in units:
        expected = expected_levels(stepped, unit)
        assert _stored(unit) == {key: (level, "hash") for key, level in expected.items()}
    assert Assignment.objects.filter(unit__key__in=units).count() == len(units) * len(FACTORS)
