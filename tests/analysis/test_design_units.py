"""Each unit's level code in a design, kept by PostgreSQL's triggers on the assignments
(lab.models.DesignUnit, migration 0012; docs/designs.md, "Analysis"): whatever writes the
assignments — bulk inserts, forcing through the admin API, updates, deletes, decide, and
writers racing each other — every unit's stored code equals the code of its assignments
(``level_code``), and a design created over assignments that exist starts from theirs."""

import random
import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from lab.analysis.designs import level_code
from lab.models import Assignment, Design, DesignUnit, Variant
from rules.designs import minimum_aberration
from tests.conftest import requires_postgres

DESIGNS = "/products/widget/designs"
FACTORS = ["a", "b", "c"]


def codes_of_assignments(design: Design) -> dict[int, int]:
    """Per unit id with an assignment in a factor: its code, from its assignments (a variant
    that is neither level sets no bit), as the analysis on SQLite computes it."""
    codes: dict[int, int] = {}
    for j, factor in enumerate(design.factors.order_by("position")):
        bits = {factor.low_id: 1 << (2 * j), factor.high_id: 2 << (2 * j)}
        for unit_id, variant_id in Assignment.objects.filter(
            experiment_id=factor.experiment_id
        ).values_list("unit_id", "variant_id"):
            codes[unit_id] = codes.get(unit_id, 0) + bits.get(variant_id, 0)
    return codes


def stored_codes(design: Design) -> dict[int, int]:
    return dict(DesignUnit.objects.filter(design=design).values_list("unit_id", "code"))


def assert_codes_kept(design: Design) -> None:
    requires_postgres()
    expected = codes_of_assignments(design)
    stored = stored_codes(design)
    # A unit whose assignments were all deleted keeps a row of code 0: no run, like none.
    assert {u: c for u, c in stored.items() if c or u in expected} == expected


def make_factors(plant, keys=FACTORS) -> None:
    for key in keys:
        plant.experiment(key, ["low", "high"])


def factors_and_design(tenant, plant) -> Design:
    make_factors(plant)
    return make_design(tenant, plant)


def make_design(tenant, plant, factors=FACTORS, key="d"):
    response = tenant.post(DESIGNS, {"key": key, "factors": factors, "runs": 4})
    assert response.status_code == 201, response.content
    return Design.objects.get(product=plant.product, key=key)


def test_codes__follow_inserts_forcing_updates_and_deletes(tenant, plant):
    requires_postgres()
    # Given a 2^(3-1) design, an experiment that is no factor, and a third variant of c
    make_factors(plant, [*FACTORS, "other"])
    design = make_design(tenant, plant)
    plant.variants[("c", "old")] = Variant.objects.create(
        experiment=plant.experiments["c"], key="old"
    )
    rng = random.Random(12)
    levels = ["low", "high"]
    # When units are stored in bulk (some missing a factor, some in the third variant)
    plant.units(
        [
            {
                **{f: rng.choice(levels) for f in FACTORS if rng.random() < 0.9},
                "other": "low",
            }
            for _ in range(60)
        ]
    )
    plant.units([{"c": "old", "a": "high"}, {}])
    assert_codes_kept(design)
    keys = [f"SN-{i:06d}" for i in range(62)]
    # and operators force some through the admin API (inserts and updates in one call)
    for factor in FACTORS:
        chosen = rng.sample(keys, 20) + [f"NEW-{factor}-{i}" for i in range(3)]
        body = {"assignments": [{"unit": k, "variant": rng.choice(levels)} for k in chosen]}
        response = tenant.post(f"/products/widget/experiments/{factor}/assignments", body)
        assert response.status_code == 200, response.content
    assert_codes_kept(design)
    # and rows are updated and deleted by SQL statements of many rows
    Assignment.objects.filter(experiment=plant.experiments["b"], unit__key__in=keys[:15]).update(
        variant=plant.variants[("b", "high")]
    )
    Assignment.objects.filter(experiment=plant.experiments["c"], unit__key__in=keys[10:25]).update(
        variant=plant.variants[("c", "old")]
    )
    Assignment.objects.filter(experiment=plant.experiments["a"], unit__key__in=keys[20:40]).delete()
    Assignment.objects.filter(unit__key__in=keys[40:45]).delete()
    # Then every unit's stored code is the code of its assignments
    assert_codes_kept(design)


def test_design_created_over_existing_assignments__starts_from_their_codes(tenant, plant):
    # Given units assigned and measured before the design exists, two in each run of the
    # fraction the design will have
    make_factors(plant)
    plant.metric("y")
    runs = minimum_aberration(len(FACTORS), 4).runs_table
    values = [1.0, 2.0, 5.0, 6.0, 3.0, 4.0, 7.0, 9.0]
    levels = [["low", "high"][level] for run in runs for level in run]
    plant.units(
        [
            dict(zip(FACTORS, levels[3 * (i // 2) : 3 * (i // 2) + 3], strict=True))
            for i in range(8)
        ],
        {"y": values},
    )
    # When the design is created over them
    design = make_design(tenant, plant)
    # Then the analysis sees them in their runs: each effect is the mean of the factor's
    # high units minus that of its low ones
    report = tenant.get(f"{DESIGNS}/d/analysis", metric="y").json()
    assert (report["n"], report["excluded"], report["runs_observed"]) == (8, 0, 4)
    expected = {}
    for j, letter in enumerate("ABC"):
        high = [v for i, v in enumerate(values) if runs[i // 2][j]]
        low = [v for i, v in enumerate(values) if not runs[i // 2][j]]
        expected[letter] = sum(high) / 4 - sum(low) / 4
    effects = {row["term"]: row["effect"] for row in report["effects"]}
    assert effects == pytest.approx(expected, abs=1e-12)
    # and on PostgreSQL the codes were filled from the assignments
    if connection.vendor == "postgresql":
        assert_codes_kept(design)
        assert sorted(stored_codes(design).values()) == sorted(
            level_code(run) for run in runs for _ in range(2)
        )


@pytest.mark.django_db(transaction=True)
def test_codes__concurrent_writers_of_the_same_units__stay_exact(tenant, plant):
    requires_postgres()
    # Given a design and 40 units assigned in every factor
    design = factors_and_design(tenant, plant)
    plant.units([dict.fromkeys(FACTORS, "low") for _ in range(40)])
    unit_ids = list(
        Assignment.objects.filter(experiment=plant.experiments["a"]).values_list(
            "unit_id", flat=True
        )
    )
    variants = {f: [plant.variants[(f, "low")].id, plant.variants[(f, "high")].id] for f in FACTORS}
    experiments = {f: plant.experiments[f].id for f in FACTORS}
    errors = []

    def writer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(30):
                factor = rng.choice(FACTORS)
                chosen = sorted(rng.sample(unit_ids, 10))
                Assignment.objects.filter(
                    experiment_id=experiments[factor], unit_id__in=chosen
                ).update(variant_id=rng.choice(variants[factor]))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    # When four threads, each on its own connection, update overlapping units at once
    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then no update was lost to a race: every code is its unit's assignments'
    assert [e for e in errors if "deadlock" not in str(e)] == []
    assert_codes_kept(design)


@pytest.mark.django_db(transaction=True)
def test_design_created_while_assignments_are_written__no_unit_missed(tenant, plant):
    requires_postgres()
    # Given the factors' experiments, and a writer storing units in them all the while
    make_factors(plant)
    levels = [[plant.variants[(f, "low")].id, plant.variants[(f, "high")].id] for f in FACTORS]
    experiments = [plant.experiments[f].id for f in FACTORS]
    product_id = plant.product.id
    done, errors, written = threading.Event(), [], [0]

    def writer():
        rng = random.Random(7)
        try:
            while not done.is_set():
                with connection.cursor() as cursor:
                    cursor.execute(
                        "WITH u AS (INSERT INTO lab_unit (product_id, key, created_at, attributes) "
                        "VALUES (%s, %s, now(), '{}') RETURNING id) "
                        "INSERT INTO lab_assignment (experiment_id, unit_id, variant_id, source, "
                        "created_at, updated_at) "
                        "SELECT e, u.id, v, 'hash', now(), now() FROM u, "
                        "unnest(%s::bigint[], %s::bigint[]) AS d(e, v)",
                        [
                            product_id,
                            f"W-{written[0]}",
                            experiments,
                            [rng.choice(pair) for pair in levels],
                        ],
                    )
                written[0] += 1
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 60  # a generous bound: a busy machine writes slowly
        while written[0] < 50 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        # When the design is created meanwhile
        design = make_design(tenant, plant)
        # and the writer goes on after it (a few units, however slowly)
        after = written[0]
        while written[0] < after + 5 and time.monotonic() < deadline + 60 and not errors:
            time.sleep(0.01)
    finally:
        done.set()
        thread.join()
    # Then every unit, stored before, during or after, has the code of its assignments
    assert errors == [] and after >= 50 and written[0] >= after + 5
    assert_codes_kept(design)
    assert len(stored_codes(design)) == written[0]


@pytest.mark.django_db(transaction=True)
def test_migration__fills_the_codes_of_designs_that_exist(tenant, plant):
    requires_postgres()
    # Given a design with units, in a database migrated back to before the codes existed
    design = factors_and_design(tenant, plant)
    plant.units([{"a": "high", "b": "low", "c": "high"}, {"a": "low", "c": "low"}, {"b": "high"}])
    expected = codes_of_assignments(design)
    try:
        call_command("migrate", "lab", "0011", verbosity=0)
    finally:
        # When it is migrated forward again
        call_command("migrate", "lab", verbosity=0)
    # Then the migration filled the design's codes from the assignments
    assert stored_codes(design) == expected and len(expected) == 3
    # and the triggers keep them from then on
    plant.units([{"a": "low", "b": "low", "c": "high"}])
    assert_codes_kept(design)


def test_rebuild_design_codes__restores_codes_written_behind_the_triggers_back(tenant, plant):
    # Given a design whose codes went wrong behind the triggers' back (here: overwritten)
    design = factors_and_design(tenant, plant)
    plant.units([{"a": "high", "b": "low", "c": "high"}, {"a": "low"}, {}])
    out = StringIO()
    if connection.vendor != "postgresql":
        call_command("rebuild_design_codes", stdout=out)
        assert "Nothing to rebuild" in out.getvalue()
        return
    DesignUnit.objects.filter(design=design).update(code=0)
    # When the operator rebuilds them
    call_command("rebuild_design_codes", stdout=out)
    # Then every code is its unit's assignments' again
    assert_codes_kept(design)
    assert "of 2 units in 1 designs" in out.getvalue()
