"""Experiments: what decide buckets units into, with their variants and control."""

import pytest

from lab.models import AuditEvent, Experiment, Product, Variant

EXPERIMENTS = "/products/widget/experiments"
ETCH_TIME = f"{EXPERIMENTS}/etch-time"


def config_version() -> int:
    return Product.objects.get(key="widget", user__username="alice").config_version


@pytest.fixture
def etch(tenant, product):
    assert tenant.post("/products/widget/steps", {"key": "etch"}).status_code == 201


@pytest.fixture
def experiment(tenant, product):
    response = tenant.post(EXPERIMENTS, {"key": "etch-time"})
    assert response.status_code == 201, response.content
    return response.json()


def test_experiments__create__defaults_and_a_salt(tenant, product):
    # When
    response = tenant.post(EXPERIMENTS, {"key": "etch-time", "description": "Longer etch"})
    # Then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key"] == body["name"] == "etch-time"
    assert (body["description"], body["status"], body["coverage"], body["step"]) == (
        "Longer etch",
        "enabled",
        1.0,
        None,
    )
    assert (body["variants"], body["control"]) == ([], None)
    assert len(body["salt"]) >= 16
    assert body["salt"] == Experiment.objects.get().salt
    assert tenant.get(ETCH_TIME).json() == body


def test_experiments__salts__differ_between_experiments(tenant, product):
    a = tenant.post(EXPERIMENTS, {"key": "a"}).json()["salt"]
    b = tenant.post(EXPERIMENTS, {"key": "b"}).json()["salt"]
    assert a != b


def test_experiments__salt__immutable(tenant, product, experiment):
    # When someone tries to change the salt
    response = tenant.patch(ETCH_TIME, {"salt": "mine"})
    # Then it is refused, and other changes leave it alone
    assert response.status_code == 422
    tenant.patch(ETCH_TIME, {"coverage": 0.5, "status": "disabled", "name": "Etch time"})
    assert tenant.get(ETCH_TIME).json()["salt"] == experiment["salt"]
    assert tenant.post(EXPERIMENTS, {"key": "x", "salt": "mine"}).status_code == 422


def test_experiments__create_with_variants__in_one_call(tenant, product):
    # When
    response = tenant.post(
        EXPERIMENTS,
        {
            "key": "etch-time",
            "coverage": 0.5,
            "variants": [
                {"key": "short", "weight": 1},
                {"key": "long", "weight": 3, "name": "Long etch"},
                {"key": "base", "is_control": True, "status": "disabled"},
            ],
        },
    )
    # Then the variants keep the order given (their bucketing order)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["variants"] == [
        {"key": "short", "name": "short", "status": "enabled", "weight": 1.0, "is_control": False},
        {
            "key": "long",
            "name": "Long etch",
            "status": "enabled",
            "weight": 3.0,
            "is_control": False,
        },
        {"key": "base", "name": "base", "status": "disabled", "weight": 1.0, "is_control": True},
    ]
    assert body["control"] == "base"
    assert list(Variant.objects.values_list("key", flat=True)) == ["short", "long", "base"]


@pytest.mark.parametrize(
    ("variants", "status"),
    [
        ([{"key": "a"}, {"key": "a"}], 409),
        ([{"key": "a", "is_control": True}, {"key": "b", "is_control": True}], 409),
        ([{"key": "a"}, {"key": "b", "weight": -1}], 422),
        ([{"key": "a"}, {"key": "Bad"}], 422),
        ([{"key": "a"}, {"key": "b", "status": "removed"}], 422),
        ([{"key": "a"}, "b"], 422),
        ([{"key": f"v{i}"} for i in range(101)], 422),
    ],
)
def test_experiments__create_with_a_bad_variant__nothing_written(tenant, product, variants, status):
    before = config_version()
    response = tenant.post(EXPERIMENTS, {"key": "etch-time", "variants": variants})
    assert response.status_code == status, response.content
    assert response.json()["detail"]
    assert not Experiment.objects.exists()
    assert not Variant.objects.exists()
    assert config_version() == before


def test_experiments__create_with_variants_and_duplicate_key__409_nothing_written(
    tenant, product, experiment
):
    response = tenant.post(EXPERIMENTS, {"key": "etch-time", "variants": [{"key": "a"}]})
    assert response.status_code == 409
    assert "etch-time" in response.json()["detail"]
    assert not Variant.objects.exists()


def test_experiments__create_with_variants_and_unknown_step__400_nothing_written(tenant, product):
    response = tenant.post(EXPERIMENTS, {"key": "e", "step": "nope", "variants": [{"key": "a"}]})
    assert response.status_code == 400
    assert "no step 'nope'" in response.json()["detail"]
    assert not Experiment.objects.exists()
    assert not Variant.objects.exists()


def test_experiments__control__oldest_variant_when_none_is_marked(tenant, product):
    tenant.post(EXPERIMENTS, {"key": "e", "variants": [{"key": "a"}, {"key": "b"}]})
    assert tenant.get(f"{EXPERIMENTS}/e").json()["control"] == "a"


def test_experiments__control__removed_variants_are_never_the_control(tenant, product):
    # Given a is the oldest, b is marked as the control
    tenant.post(
        EXPERIMENTS,
        {"key": "e", "variants": [{"key": "a"}, {"key": "b", "is_control": True}, {"key": "c"}]},
    )
    variants = f"{EXPERIMENTS}/e/variants"
    # When the marked control is removed, the oldest variant left is the control
    tenant.delete(f"{variants}/b")
    assert tenant.get(f"{EXPERIMENTS}/e").json()["control"] == "a"
    # When that one is removed too, the next oldest
    tenant.delete(f"{variants}/a")
    body = tenant.get(f"{EXPERIMENTS}/e").json()
    assert (body["control"], [v["key"] for v in body["variants"]]) == ("c", ["c"])
    # When every variant is removed, there is no control
    tenant.delete(f"{variants}/c")
    assert tenant.get(f"{EXPERIMENTS}/e").json()["control"] is None


def test_experiments__control__a_disabled_control_stays_the_control(tenant, product):
    tenant.post(
        EXPERIMENTS, {"key": "e", "variants": [{"key": "a"}, {"key": "b", "is_control": True}]}
    )
    tenant.patch(f"{EXPERIMENTS}/e/variants/b", {"status": "disabled"})
    assert tenant.get(f"{EXPERIMENTS}/e").json()["control"] == "b"


def test_experiments__step__by_key_and_cleared_with_null(tenant, product, etch):
    response = tenant.post(EXPERIMENTS, {"key": "etch-time", "step": "etch"})
    assert response.json()["step"] == "etch"
    assert tenant.patch(ETCH_TIME, {"step": None}).json()["step"] is None
    assert tenant.patch(ETCH_TIME, {"step": "etch"}).json()["step"] == "etch"


def test_experiments__unknown_or_removed_step__400(tenant, product, etch, experiment):
    response = tenant.patch(ETCH_TIME, {"step": "nope"})
    assert response.status_code == 400
    assert "no step 'nope'" in response.json()["detail"]
    tenant.delete("/products/widget/steps/etch")
    response = tenant.post(EXPERIMENTS, {"key": "e2", "step": "etch"})
    assert response.status_code == 400
    assert "removed" in response.json()["detail"]
    assert tenant.patch(ETCH_TIME, {"step": "etch"}).status_code == 400
    assert Experiment.objects.get().step is None


def test_experiments__duplicate_key__409(tenant, product, experiment):
    response = tenant.post(EXPERIMENTS, {"key": "etch-time"})
    assert response.status_code == 409
    assert "etch-time" in response.json()["detail"]


def test_experiments__create__bumps_config_version(tenant, product):
    before = config_version()
    tenant.post(EXPERIMENTS, {"key": "e", "variants": [{"key": "a"}, {"key": "b"}]})
    assert config_version() != before


@pytest.mark.parametrize(
    "patch",
    [{"status": "disabled"}, {"coverage": 0.25}, {"step": "etch"}],
)
def test_experiments__decide_relevant_change__bumps_config_version(
    tenant, product, etch, experiment, patch
):
    before = config_version()
    response = tenant.patch(ETCH_TIME, patch)
    assert response.status_code == 200
    assert config_version() != before


def test_experiments__rename__no_bump_and_no_audit(tenant, product, experiment):
    before = config_version()
    tenant.patch(ETCH_TIME, {"name": "Etch time", "description": "why"})
    assert config_version() == before
    assert not AuditEvent.objects.exists()


def test_experiments__pause_and_resume__audited(tenant, product, experiment):
    tenant.patch(ETCH_TIME, {"status": "disabled"})
    tenant.patch(ETCH_TIME, {"status": "enabled"})
    events = AuditEvent.objects.order_by("id")
    assert [(e.object_type, e.object_key, e.from_value, e.to_value) for e in events] == [
        ("experiment", "etch-time", "enabled", "disabled"),
        ("experiment", "etch-time", "disabled", "enabled"),
    ]
    assert {e.actor for e in events} == {"alice"}


def test_experiments__delete__removes_hides_audits_and_bumps(tenant, product, experiment):
    before = config_version()
    response = tenant.delete(ETCH_TIME)
    assert response.status_code == 200
    assert response.json()["status"] == "removed"
    assert tenant.get(EXPERIMENTS).json()["count"] == 0
    assert tenant.get(EXPERIMENTS, status="removed").json()["count"] == 1
    assert AuditEvent.objects.get().to_value == "removed"
    assert config_version() != before
    assert tenant.post(EXPERIMENTS, {"key": "etch-time"}).status_code == 409


def test_experiments__list__paginated_with_variants_in_few_queries(
    tenant, product, django_assert_max_num_queries
):
    # Given five experiments with two variants each
    for i in range(5):
        tenant.post(EXPERIMENTS, {"key": f"e{i}", "variants": [{"key": "a"}, {"key": "b"}]})
    # When
    with django_assert_max_num_queries(8):
        page = tenant.get(EXPERIMENTS, limit=3, offset=1).json()
    # Then
    assert page["count"] == 5
    assert [e["key"] for e in page["items"]] == ["e1", "e2", "e3"]
    assert all([v["key"] for v in e["variants"]] == ["a", "b"] for e in page["items"])


def test_experiments__create_disabled__allowed(tenant, product):
    response = tenant.post(EXPERIMENTS, {"key": "e", "status": "disabled"})
    assert response.json()["status"] == "disabled"


def test_experiments__another_tenants_product__404_on_every_route(
    tenant, other_tenant, product, experiment
):
    assert other_tenant.get(EXPERIMENTS).status_code == 404
    assert other_tenant.post(EXPERIMENTS, {"key": "e"}).status_code == 404
    assert other_tenant.get(ETCH_TIME).status_code == 404
    assert other_tenant.patch(ETCH_TIME, {"status": "disabled"}).status_code == 404
    assert other_tenant.delete(ETCH_TIME).status_code == 404
    assert list(Experiment.objects.values_list("key", "status")) == [("etch-time", "enabled")]
    # Even with a product of the same key of its own
    other_tenant.post("/products", {"key": "widget"})
    assert other_tenant.get(ETCH_TIME).status_code == 404


def test_experiments__unknown_experiment__404(tenant, product):
    assert tenant.get(f"{EXPERIMENTS}/nope").status_code == 404
    assert tenant.patch(f"{EXPERIMENTS}/nope", {"name": "x"}).status_code == 404
    assert tenant.delete(f"{EXPERIMENTS}/nope").status_code == 404
    assert tenant.get(f"{EXPERIMENTS}/x%00y").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"key": "UPPER"},
        {"key": "nul\x00"},
        {"key": "e", "name": "nul\x00"},
        {"key": "e", "description": "nul\x00"},
        {"key": "e", "description": "x" * 10_001},
        {"key": "e", "coverage": 1.01},
        {"key": "e", "coverage": -0.1},
        {"key": "e", "coverage": "0.5"},
        {"key": "e", "coverage": None},
        {"key": "e", "status": "removed"},
        {"key": "e", "status": "on"},
        {"key": "e", "step": "Bad Step"},
        {"key": "e", "variants": {"key": "a"}},
        {"key": "e", "variants": None},
        {"key": "e", "unknown": 1},
        {"name": "no key"},
    ],
)
def test_experiments__bad_input__422_and_nothing_written(tenant, product, body):
    response = tenant.post(EXPERIMENTS, body)
    assert response.status_code == 422, (body, response.content)
    assert response.json()["detail"]
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key":"e","coverage":NaN}',
        b'{"key":"e","coverage":1e999}',
        b'{"key":"e","variants":[{"key":"a","weight":Infinity}]}',
        b'{"key":"e"',
    ],
)
def test_experiments__unparseable_or_non_finite__400(tenant, product, raw):
    response = tenant.post(EXPERIMENTS, raw=raw)
    assert response.status_code == 400
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"coverage": 2},
        {"coverage": -1},
        {"coverage": None},
        {"status": None},
        {"status": "paused"},
        {"name": None},
        {"key": "renamed"},
        {"variants": []},
        {"step": 1},
    ],
)
def test_experiments__bad_patch__422_and_unchanged(tenant, product, experiment, body):
    before = config_version()
    response = tenant.patch(ETCH_TIME, body)
    assert response.status_code == 422, (body, response.content)
    row = Experiment.objects.get()
    assert (row.key, row.name, row.status, row.coverage) == (
        "etch-time",
        "etch-time",
        "enabled",
        1.0,
    )
    assert config_version() == before
