"""POST /api/v1/decide: the answers production software gets, and every status rule."""

import unicodedata

import pytest
from django.test import Client

from lab.models import Assignment, AuditEvent, ClientKey, Product, Unit
from lab.services.credentials import client_key_create, client_key_revoke
from tests.decide.conftest import (
    DecideClient,
    expected_variant,
    make_experiment,
    unit_for,
    variant,
)
from tests.factories import AssignmentFactory, ProductFactory, UnitFactory


def test_decide__new_unit__answers_the_contract_and_stores_it(decider):
    # Given
    etch = make_experiment(decider.product, "etch", [("short", 1), ("long", 3)])
    # When
    response = decider.post("/api/v1/decide", {"unit": "SN-1"})
    # Then
    assert response.status_code == 200
    assert response.json() == {"unit": "SN-1", "variants": {"etch": expected_variant(etch, "SN-1")}}
    unit = Unit.objects.get(product=decider.product, key="SN-1")
    stored = Assignment.objects.get(experiment=etch, unit=unit)
    assert (stored.variant.key, stored.source) == (expected_variant(etch, "SN-1"), "hash")


def test_decide__same_unit_again__same_answer_one_row(decider):
    make_experiment(decider.product, "etch")
    first = decider.decide("SN-1")
    assert [decider.decide("SN-1") for _ in range(3)] == [first] * 3
    assert Assignment.objects.count() == 1
    assert Unit.objects.count() == 1


def test_decide__unit_keys__case_sensitive_and_unicode(decider):
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    for unit in ("sn-1", "SN-1", "Müller-Ø", "lot 7 wafer 3", "🙂"):
        assert decider.decide(unit) == {"etch": expected_variant(etch, unit)}
    assert Unit.objects.count() == 5


NFC_UNIT, NFD_UNIT = "M\u00fcller-1", "Mu\u0308ller-1"  # the same text, two byte strings


def test_decide__unit_keys__nfc_and_nfd_forms_are_two_units(decider):
    # Given an experiment, and one text in two Unicode normalisation forms
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1), ("d", 1)])
    assert unicodedata.normalize("NFC", NFD_UNIT) == NFC_UNIT
    # When both are decided, alone and in one batch
    alone = [decider.decide(unit)["etch"] for unit in (NFC_UNIT, NFD_UNIT)]
    batch = decider.batch([NFD_UNIT, NFC_UNIT, NFD_UNIT])
    # Then each is hashed as its own UTF-8 bytes, stored and answered as its own unit
    assert alone == [expected_variant(etch, NFC_UNIT), expected_variant(etch, NFD_UNIT)]
    assert [d["unit"] for d in batch] == [NFD_UNIT, NFC_UNIT, NFD_UNIT]
    assert [d["variants"]["etch"] for d in batch] == [alone[1], alone[0], alone[1]]
    stored = dict(Assignment.objects.values_list("unit__key", "variant__key"))
    assert stored == {NFC_UNIT: alone[0], NFD_UNIT: alone[1]}
    assert Unit.objects.filter(product=decider.product).count() == 2


def test_decide__no_filter__every_enabled_experiment_in_creation_order(decider):
    # Given three enabled experiments, one paused and one removed
    for key in ("zeta", "alpha", "mid"):
        make_experiment(decider.product, key)
    make_experiment(decider.product, "paused", status="disabled")
    make_experiment(decider.product, "gone", status="removed")
    # When
    variants = decider.decide("SN-1")
    # Then
    assert list(variants) == ["zeta", "alpha", "mid"]
    assert all(v in ("a", "b") for v in variants.values())


def test_decide__experiments_filter__answers_each_asked_key_null_for_unknown(decider):
    # Given
    etch = make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal")
    make_experiment(decider.product, "paused", status="disabled")
    make_experiment(decider.product, "gone", status="removed")
    # When
    variants = decider.decide("SN-1", experiments=["nope", "paused", "etch", "gone", "etch"])
    # Then one entry per key asked for, in that order; unknown, paused and removed are null
    assert variants == {
        "nope": None,
        "paused": None,
        "etch": expected_variant(etch, "SN-1"),
        "gone": None,
    }
    assert list(variants) == ["nope", "paused", "etch", "gone"]
    # And nothing is stored for the experiments that were not asked for
    assert Assignment.objects.get().experiment == etch


def test_decide__empty_experiments_filter__empty_answer(decider):
    make_experiment(decider.product, "etch")
    assert decider.decide("SN-1", experiments=[]) == {}
    assert Unit.objects.count() == 0


def test_decide__step_filter__only_the_experiments_of_that_step(decider):
    # Given
    make_experiment(decider.product, "etch-time", step="etch")
    make_experiment(decider.product, "etch-gas", step="etch")
    make_experiment(decider.product, "anneal-temp", step="anneal")
    make_experiment(decider.product, "no-step")
    # Then
    assert list(decider.decide("SN-1", step="etch")) == ["etch-time", "etch-gas"]
    assert decider.decide("SN-1", step="unknown-step") == {}
    # And with both filters, an asked experiment of another step is null
    both = decider.decide("SN-1", step="etch", experiments=["anneal-temp", "etch-gas"])
    assert both["anneal-temp"] is None
    assert both["etch-gas"] in ("a", "b")


def test_decide__experiment_paused__null_then_same_variant_back(decider):
    # Given a unit assigned while the experiment ran
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    before = decider.decide("SN-1", experiments=["etch"])["etch"]
    # When the experiment is paused
    decider.change(etch, status="disabled")
    # Then decide answers null and the assignment is kept
    assert decider.decide("SN-1", experiments=["etch"]) == {"etch": None}
    assert decider.decide("SN-1") == {}
    assert Assignment.objects.filter(experiment=etch).count() == 1
    # And when it runs again, the unit gets its variant back even if weights moved
    decider.change(etch, status="enabled")
    decider.change(variant(etch, before), weight=0.001)
    assert decider.decide("SN-1", experiments=["etch"]) == {"etch": before}


def test_decide__product_disabled__every_experiment_null_nothing_stored(decider):
    # Given
    make_experiment(decider.product, "etch")
    make_experiment(decider.product, "anneal")
    assigned = decider.decide("SN-1")
    # When
    decider.change(decider.product, status="disabled")
    # Then
    assert decider.decide("SN-1") == {"etch": None, "anneal": None}
    assert decider.decide("SN-2") == {"etch": None, "anneal": None}
    assert decider.batch(["SN-1", "SN-3"])[1]["variants"] == {"etch": None, "anneal": None}
    assert not Unit.objects.filter(key__in=["SN-2", "SN-3"]).exists()
    # And enabling it again restores the earlier answers
    decider.change(decider.product, status="enabled")
    assert decider.decide("SN-1") == assigned


def test_decide__product_removed__401(decider):
    make_experiment(decider.product, "etch")
    decider.change(decider.product, status="removed")
    response = decider.post("/api/v1/decide", {"unit": "SN-1"})
    assert response.status_code == 401
    assert response.json()["detail"]


def test_decide__revoked_key__401_on_the_very_next_call(decider):
    # Given a key in use (its product's config is warm in this worker)
    make_experiment(decider.product, "etch")
    decider.decide("SN-1")
    # When
    client_key_revoke(product=decider.product, key_id=ClientKey.objects.get().id)
    # Then
    assert decider.post("/api/v1/decide", {"unit": "SN-1"}).status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer lab_0123456789ab_secret",
        "Bearer lck_short_secret",
        "Bearer not-a-key",
    ],
)
def test_decide__missing_or_malformed_key__401(decider, authorization):
    make_experiment(decider.product, "etch")
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = decider.post("/api/v1/decide", {"unit": "SN-1"}, key="", **headers)
    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"] == "Bearer"


def test_decide__right_prefix_wrong_secret__401(decider):
    make_experiment(decider.product, "etch")
    forged = decider.secret[:-4] + ("AAAA" if not decider.secret.endswith("AAAA") else "BBBB")
    assert decider.post("/api/v1/decide", {"unit": "SN-1"}, key=forged).status_code == 401
    assert Unit.objects.count() == 0


def test_decide__key_of_another_product__decides_only_for_its_own(decider):
    # Given another tenant's product with its own experiment and key
    other_product = ProductFactory(key="gadget")
    make_experiment(other_product, "secret-exp")
    other = DecideClient(other_product, client_key_create(product=other_product).secret, Client())
    make_experiment(decider.product, "etch")
    # Then each key sees only its product's experiments and units
    assert list(decider.decide("SN-1")) == ["etch"]
    assert decider.decide("SN-1", experiments=["secret-exp"]) == {"secret-exp": None}
    assert list(other.decide("SN-1")) == ["secret-exp"]
    assert Unit.objects.filter(key="SN-1").count() == 2


def test_decide__variant_disabled__assigned_units_keep_it_no_new_units(decider):
    # Given a unit on "b"
    etch = make_experiment(decider.product, "etch")
    on_b = unit_for(etch, "b")
    assert decider.decide(on_b) == {"etch": "b"}
    # When "b" is closed
    decider.change(variant(etch, "b"), status="disabled")
    # Then the unit keeps "b" and new units all get "a"
    assert decider.decide(on_b) == {"etch": "b"}
    new_answers = {decider.decide(f"NEW-{i}")["etch"] for i in range(20)}
    assert new_answers == {"a"}


def test_decide__variant_removed__rebuckets_unit_and_audits(decider):
    # Given a unit on "b"
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1), ("c", 1)])
    unit = unit_for(etch, "b")
    decider.decide(unit)
    # When "b" is emptied
    decider.change(variant(etch, "b"), status="removed")
    # Then the unit is hashed again among the enabled variants and the move is stored
    expected = expected_variant(etch, unit)
    assert expected in ("a", "c")
    assert decider.decide(unit) == {"etch": expected}
    stored = Assignment.objects.get(experiment=etch, unit__key=unit)
    assert (stored.variant.key, stored.source) == (expected, "rebucketed")
    event = AuditEvent.objects.get(action="rebucketed")
    assert (event.object_type, event.object_key) == ("assignment", f"etch/{unit}")
    assert (event.from_value, event.to_value) == ("b", expected)
    assert event.product == decider.product
    # And the new variant is sticky: no second move, no second event
    assert decider.decide(unit) == {"etch": expected}
    assert AuditEvent.objects.filter(action="rebucketed").count() == 1


def test_decide__variant_removed_and_no_eligible_left__null_assignment_kept(decider):
    etch = make_experiment(decider.product, "etch", [("a", 1)])
    decider.decide("SN-1")
    decider.change(variant(etch, "a"), status="removed")
    assert decider.decide("SN-1") == {"etch": None}
    assert Assignment.objects.get().variant.key == "a"
    assert not AuditEvent.objects.filter(action="rebucketed").exists()


def test_decide__weight_and_coverage_changes__assigned_units_stay(decider):
    # Given 40 units assigned at even weights
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    units = [f"SN-{i}" for i in range(40)]
    before = {d["unit"]: d["variants"]["etch"] for d in decider.batch(units)}
    assert set(before.values()) == {"a", "b"}
    # When the weights flip hard and coverage drops
    decider.change(variant(etch, "a"), weight=0.0)
    decider.change(etch, coverage=0.1)
    # Then every assigned unit keeps its variant (a zero-weight one included)
    after = {d["unit"]: d["variants"]["etch"] for d in decider.batch(units)}
    assert after == before


def test_decide__outside_coverage__null_and_nothing_stored(decider):
    # Given
    etch = make_experiment(decider.product, "etch", coverage=0.5)
    outside = unit_for(etch, None)
    inside = unit_for(etch, "a")
    # Then
    assert decider.decide(outside) == {"etch": None}
    assert not Unit.objects.filter(key=outside).exists()
    assert not Assignment.objects.exists()
    assert decider.decide(inside) == {"etch": "a"}
    # And raising coverage only adds units: the outside one now gets a variant
    decider.change(etch, coverage=1.0)
    assert decider.decide(outside)["etch"] == expected_variant(etch, outside)
    assert decider.decide(inside) == {"etch": "a"}


@pytest.mark.parametrize(
    "variants", [(), (("a", 0),), (("a", 0), ("b", 0))], ids=["none", "zero", "all-zero"]
)
def test_decide__no_eligible_variant__null(decider, variants):
    make_experiment(decider.product, "etch", variants)
    assert decider.decide("SN-1") == {"etch": None}
    assert not Assignment.objects.exists()


def test_decide__all_variants_disabled__null_for_new_units(decider):
    etch = make_experiment(decider.product, "etch", [("a", 1), ("b", 1)])
    decider.decide("SN-1")
    for key in ("a", "b"):
        decider.change(variant(etch, key), status="disabled")
    assert decider.decide("SN-2") == {"etch": None}
    assert decider.decide("SN-1")["etch"] in ("a", "b")


def test_decide__forced_assignment__wins(decider):
    # Given an operator forced a unit onto the variant the hash would not give it
    etch = make_experiment(decider.product, "etch")
    unit_key = unit_for(etch, "a")
    unit = UnitFactory(product=decider.product, key=unit_key)
    AssignmentFactory(experiment=etch, unit=unit, variant=variant(etch, "b"), source="forced")
    # Then
    assert decider.decide(unit_key) == {"etch": "b"}
    # Even when "b" is closed
    decider.change(variant(etch, "b"), status="disabled")
    assert decider.decide(unit_key) == {"etch": "b"}


def test_decide__unit_known_from_admin__gets_assignments(decider):
    # Given a unit created in bulk by the admin API before any decision
    UnitFactory(product=decider.product, key="SN-1")
    etch = make_experiment(decider.product, "etch")
    # Then
    assert decider.decide("SN-1") == {"etch": expected_variant(etch, "SN-1")}
    assert Unit.objects.filter(key="SN-1").count() == 1


def test_decide__admin_toggle__visible_on_the_very_next_decide(decider, tenant):
    # Given a product made through the admin API, with its client key
    tenant.post("/products", {"key": "line"})
    secret = tenant.post("/products/line/client-keys", {"name": "mes"}).json()["secret"]
    line = DecideClient(Product.objects.get(key="line"), secret, Client())
    make_experiment(line.product, "etch")
    assert line.decide("SN-1")["etch"] in ("a", "b")
    # When an operator disables the product
    assert tenant.patch("/products/line", {"status": "disabled"}).status_code == 200
    # Then the very next decision sees it, and the re-enable too
    assert line.decide("SN-1") == {"etch": None}
    tenant.patch("/products/line", {"status": "enabled"})
    assert line.decide("SN-1")["etch"] in ("a", "b")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"unit": ""},
        {"unit": " SN-1"},
        {"unit": "SN-1 "},
        {"unit": "lot/1"},
        {"unit": "x" * 129},
        {"unit": "tab\there"},
        {"unit": 12},
        {"unit": None},
        {"unit": ["SN-1"]},
        {"unit": "SN-1", "experiments": "etch"},
        {"unit": "SN-1", "experiments": ["Not-A-Key"]},
        {"unit": "SN-1", "step": "Bad Step"},
        {"unit": "SN-1", "extra": 1},
    ],
)
def test_decide__bad_input__422_with_detail(decider, body):
    make_experiment(decider.product, "etch")
    response = decider.post("/api/v1/decide", body)
    assert response.status_code == 422, response.content
    assert response.json()["detail"]
    assert not Unit.objects.exists()


@pytest.mark.parametrize("raw", [b"{not json", b'{"unit": NaN}', b"\xff\xfe", b""])
def test_decide__unparsable_body__4xx_with_detail(decider, raw):
    response = decider.post("/api/v1/decide", raw=raw)
    assert response.status_code in (400, 422), response.content
    assert response.json()["detail"]


@pytest.mark.parametrize("raw", [b'{"unit": "lot/1"}', b"{not json", b'{"unit": NaN}'])
def test_decide__bad_key_and_bad_body__401_first(decider, raw):
    response = decider.post("/api/v1/decide", raw=raw, key="lck_0123456789ab_nope")
    assert response.status_code == 401


def test_decide__get__405(decider):
    response = decider.client.get("/api/v1/decide", HTTP_AUTHORIZATION=f"Bearer {decider.secret}")
    assert response.status_code == 405


def test_openapi__documents_decide_batch_and_ofrep(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    assert {
        "/api/v1/decide",
        "/api/v1/decide/batch",
        "/ofrep/v1/evaluate/flags/{key}",
        "/ofrep/v1/evaluate/flags",
    } <= set(schema["paths"])
