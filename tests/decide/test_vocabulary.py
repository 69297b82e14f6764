"""One vocabulary for statuses and for why a unit got its answer (rules/vocabulary.py): the
model choices, the engine and OFREP derive theirs from it."""

import typing

from decide import ofrep
from decide.schemas import OfrepReason
from lab import models
from rules.vocabulary import ASSIGNMENT_SOURCES, Reason, Status, reason_of_stored


def test_vocabulary__model_choices_are_derived():
    assert models.Status.values == [s.value for s in Status]
    assert models.AssignmentSource.values == [r.value for r in ASSIGNMENT_SOURCES]
    assert models.Status.ENABLED == Status.ENABLED == "enabled"


def test_vocabulary__every_evaluated_reason_has_an_ofrep_reason():
    # UNKNOWN is the one reason that is not an evaluation (404 FLAG_NOT_FOUND)
    assert set(ofrep.REASONS) == set(Reason) - {Reason.UNKNOWN}
    assert set(ofrep.REASONS.values()) <= set(typing.get_args(OfrepReason))


def test_vocabulary__stored_sources__forced_is_its_own_reason():
    assert reason_of_stored(Reason.FORCED) == Reason.FORCED
    assert reason_of_stored(Reason.HASH) == Reason.STORED
    assert reason_of_stored(Reason.REBUCKETED) == Reason.STORED
