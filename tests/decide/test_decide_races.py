"""Concurrent first decisions: exactly one row per (experiment, unit), every racer returns it.

A racer is simulated by a read that happened just before another worker committed: the
stored row is hidden from the read, so the write conflicts and the winner is read back.
(tests/e2e/test_e2e_concurrency.py races real gunicorn workers.)
"""

from unittest import mock

import pytest

from decide import store
from decide.auth import parse_client_key
from lab.models import Assignment, AuditEvent
from tests.decide.conftest import make_experiment, unit_for, variant
from tests.factories import AssignmentFactory, UnitFactory


@pytest.fixture
def stale_reads(monkeypatch):
    """Reads see no stored assignments (and no units): as if taken before a racer's commit."""
    real = store.read_units

    def before_the_racer(credential, unit_keys):
        state, _ = real(credential, unit_keys)
        return state, {}

    monkeypatch.setattr(store, "read_units", before_the_racer)


def test_race__unit_and_assignment_stored_by_racer__racer_answer_returned(decider, stale_reads):
    # Given another worker stored the unit on "b" (forced: not what this hash gives)
    etch = make_experiment(decider.product, "etch")
    unit_key = unit_for(etch, "a")
    unit = UnitFactory(product=decider.product, key=unit_key)
    AssignmentFactory(experiment=etch, unit=unit, variant=variant(etch, "b"), source="forced")
    # When this worker decides from its earlier read
    answer = decider.decide(unit_key)
    # Then it answers what is stored, and nothing was duplicated or overwritten
    assert answer == {"etch": "b"}
    assert Assignment.objects.filter(experiment=etch).count() == 1
    assert Assignment.objects.get().source == "forced"


def test_race__batch_some_units_stored_by_racer__each_gets_the_stored_row(decider, stale_reads):
    etch = make_experiment(decider.product, "etch")
    raced = unit_for(etch, "a", prefix="R")
    unit = UnitFactory(product=decider.product, key=raced)
    AssignmentFactory(experiment=etch, unit=unit, variant=variant(etch, "b"), source="forced")
    decisions = decider.batch([raced, "FRESH-1", raced])
    assert [d["variants"]["etch"] for d in decisions][::2] == ["b", "b"]
    assert Assignment.objects.filter(experiment=etch).count() == 2


def test_race__rebucketing_done_by_racer__its_move_returned_one_audit_event(decider):
    # Given a unit on "b", then "b" removed
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    unit_key = unit_for(etch, "b")
    decider.decide(unit_key)
    decider.change(variant(etch, "b"), status="removed")
    state, units = store.read_units(parse_client_key(decider.secret), [unit_key])
    # And another worker moved it meanwhile (to "a" here, whatever the hash says)
    Assignment.objects.filter(unit__key=unit_key).update(variant=variant(etch, "a"))
    # When this worker decides from its earlier read
    with mock.patch.object(store, "read_units", return_value=(state, units)):
        answer = decider.decide(unit_key)
    # Then it answers the racer's move and does not audit a move it did not make
    assert answer == {"etch": "a"}
    assert not AuditEvent.objects.filter(action="rebucketed").exists()
