"""The database budget of the hot path (docs/decide.md, "How the answer stays fast"): one
round trip for a known unit, one more statement to store a new one, extra statements only
on a config cache miss."""

import pytest

from lab.models import Assignment
from tests.conftest import clear_test_caches, requires_postgres
from tests.decide.conftest import make_experiment


@pytest.fixture
def three_experiments(decider):
    for key in ("etch", "anneal", "litho"):
        make_experiment(decider.product, key, [("a", 1), ("b", 1), ("c", 1)])
    decider.decide("WARM-UP")  # compiles the config into this worker's memory
    return decider


def test_queries__known_unit_warm_config__one_round_trip(
    three_experiments, django_assert_num_queries
):
    # Given a unit assigned to three experiments
    decider = three_experiments
    assigned = decider.decide("SN-1")
    # Then deciding it again (key check, version and its assignments) is one statement
    with django_assert_num_queries(1):
        assert decider.decide("SN-1") == assigned


def test_queries__new_unit_postgres__one_read_one_write(
    three_experiments, django_assert_num_queries
):
    requires_postgres()
    with django_assert_num_queries(2):
        variants = three_experiments.decide("SN-NEW")
    assert len(variants) == 3
    assert Assignment.objects.filter(unit__key="SN-NEW").count() == 3


def test_queries__new_unit_sqlite__at_most_three(three_experiments, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        three_experiments.decide("SN-NEW")
    assert Assignment.objects.filter(unit__key="SN-NEW").count() == 3


def test_queries__new_assignments_for_known_unit__one_read_one_write(
    three_experiments, django_assert_num_queries
):
    # Given a known unit and a fourth experiment started since
    decider = three_experiments
    decider.decide("SN-1")
    make_experiment(decider.product, "dice")
    decider.decide("OTHER")  # warm the new config version
    # Then
    with django_assert_num_queries(2):
        assert len(decider.decide("SN-1")) == 4


def test_queries__config_cache_miss__one_more_statement(
    three_experiments, django_assert_num_queries
):
    decider = three_experiments
    decider.decide("SN-1")
    clear_test_caches()
    with django_assert_num_queries(2):
        decider.decide("SN-1")


def test_queries__batch_of_known_units__one_round_trip(
    three_experiments, django_assert_num_queries
):
    units = [f"SN-{i}" for i in range(100)]
    three_experiments.batch(units)
    with django_assert_num_queries(1):
        three_experiments.batch(units)


def test_queries__batch_of_new_units_postgres__one_read_one_write(
    three_experiments, django_assert_num_queries
):
    requires_postgres()
    with django_assert_num_queries(2):
        decisions = three_experiments.batch([f"NEW-{i}" for i in range(1000)])
    assert len(decisions) == 1000
    assert Assignment.objects.filter(unit__key__startswith="NEW-").count() == 3000


def test_queries__ofrep_known_unit__one_round_trip(three_experiments, django_assert_num_queries):
    three_experiments.decide("SN-1")
    with django_assert_num_queries(1):
        assert three_experiments.flag("etch", "SN-1").status_code == 200


def test_queries__ofrep_refusals_with_a_good_key__one_statement(
    three_experiments, django_assert_num_queries
):
    decider = three_experiments
    with django_assert_num_queries(1):
        assert decider.post("/ofrep/v1/evaluate/flags/etch", raw=b"{nope").status_code == 400
    with django_assert_num_queries(1):
        response = decider.post(
            "/ofrep/v1/evaluate/flags/NOT_A_KEY", {"context": {"targetingKey": "SN-1"}}
        )
        assert response.status_code == 404


def test_queries__refused_shared_entry__one_more_statement_only(
    three_experiments, django_assert_num_queries
):
    # A bad entry under the key costs what a miss costs: the config from the database
    from decide import config

    decider = three_experiments
    decider.decide("SN-1")
    decider.product.refresh_from_db()
    config.shared_set(config.cache_key(decider.product.id, decider.product.config_version), b"7")
    config.clear_memory()
    with django_assert_num_queries(2):
        decider.decide("SN-1")
