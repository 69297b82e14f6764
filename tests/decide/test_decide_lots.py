"""Randomizing by lot through decide, batch and OFREP (docs/decide-vectors.md, "Randomizing by
lot"): the attribute's value is hashed instead of the unit key, so every unit of a lot gets the
lot's variant; a unit without it gets no variant and nothing is stored."""

from lab.models import Assignment, Unit
from rules.bucketing import bucket_position
from tests.decide.conftest import make_experiment

FLAG = "/ofrep/v1/evaluate/flags/{}"


def lot_experiment(decider):
    experiment = make_experiment(decider.product, "etch-time", (("a", 1.0), ("b", 1.0)))
    decider.change(experiment, randomize_by="lot")
    return experiment


def decide(decider, unit, attributes=None):
    body = {"unit": unit, **({"attributes": attributes} if attributes is not None else {})}
    response = decider.post("/api/v1/decide", body)
    assert response.status_code == 200, response.content
    return response.json()["variants"]["etch-time"]


def lot_variant(experiment, lot: str) -> str:
    x = bucket_position(experiment.salt, lot)
    return "a" if x < 0.5 else "b"


def test_decide__randomized_by_lot__every_unit_of_a_lot_gets_the_lots_variant(decider):
    # Given an experiment randomized by `lot`
    experiment = lot_experiment(decider)
    candidates = [f"L{i}" for i in range(100)]
    lots = [next(lot for lot in candidates if lot_variant(experiment, lot) == v) for v in "ab"]
    lots += [lot for lot in candidates[:8] if lot not in lots][:6]
    # When 5 units of each lot are decided (attributes sent, or stored on the unit)
    answers = {}
    for lot in lots:
        for i in range(5):
            unit = f"{lot}-SN-{i}"
            if i % 2:
                Unit.objects.create(product=decider.product, key=unit, attributes={"lot": lot})
                answers[unit] = decide(decider, unit)
            else:
                answers[unit] = decide(decider, unit, {"lot": lot})
    # Then each unit got its lot's variant, by the hash of the lot, stored per unit
    for unit, answer in answers.items():
        assert answer == lot_variant(experiment, unit.split("-")[0]), unit
    assert Assignment.objects.filter(experiment=experiment).count() == len(answers)
    assert set(answers.values()) == {"a", "b"}


def test_decide__randomized_by_lot__number_and_string_of_the_same_text_are_one_lot(decider):
    experiment = lot_experiment(decider)
    answers = {
        decide(decider, f"SN-{i}", {"lot": value}) for i, value in enumerate([42, "42", 42.0])
    }
    assert answers == {lot_variant(experiment, "42")}


def test_decide__randomized_by_lot__unit_without_the_lot_gets_null_and_nothing_stored(decider):
    # Given an experiment randomized by lot
    experiment = lot_experiment(decider)
    # When units without the attribute, or with a list, are decided
    assert decide(decider, "SN-1") is None
    assert decide(decider, "SN-2", {"lot": ["L1", "L2"]}) is None
    assert decide(decider, "SN-3", {"line": "3"}) is None
    # Then nothing is stored, and OFREP says TARGETING_MATCH (as for a failed condition)
    assert not Assignment.objects.filter(experiment=experiment).exists()
    response = decider.post(FLAG.format("etch-time"), {"context": {"targetingKey": "SN-4"}})
    assert response.status_code == 200, response.content
    # with no value, so that the caller's default applies (docs/decide.md)
    assert response.json()["reason"] == "TARGETING_MATCH"
    assert "value" not in response.json()
    assert "errorCode" not in response.json()


def test_decide__randomized_by_lot__batch_and_ofrep_agree_with_decide(decider):
    experiment = lot_experiment(decider)
    response = decider.post(
        "/api/v1/decide/batch",
        {"units": [{"key": f"SN-{i}", "attributes": {"lot": "L7"}} for i in range(4)] + ["SN-9"]},
    )
    assert response.status_code == 200, response.content
    decisions = [d["variants"]["etch-time"] for d in response.json()["decisions"]]
    assert decisions == [lot_variant(experiment, "L7")] * 4 + [None]
    response = decider.post(
        FLAG.format("etch-time"), {"context": {"targetingKey": "SN-20", "lot": "L7"}}
    )
    assert response.json()["value"] == lot_variant(experiment, "L7")
