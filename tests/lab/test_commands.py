"""Management commands a new user runs: create_api_token and demo."""

import shlex
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from lab.dev.demo import DEMO_SALTS
from lab.models import ClientKey, Experiment, Metric, Product, Status, Variant
from rules.credentials import CLIENT_KEY_KIND, matches, split_prefix


def run(command: str, *args: str) -> list[str]:
    """Run a command with stdout and stderr in one stream, as a terminal shows them."""
    output = StringIO()
    call_command(command, *args, stdout=output, stderr=output)
    return output.getvalue().strip().splitlines()


def client_key_of(lines: list[str]) -> str:
    labelled = [line for line in lines if line.startswith("Client key: ")]
    assert len(labelled) == 1, lines
    return labelled[0].removeprefix("Client key: ")


def live_client_key(secret: str) -> ClientKey:
    row = ClientKey.objects.select_related("product").get(
        prefix=split_prefix(secret, CLIENT_KEY_KIND), revoked_at__isnull=True
    )
    assert matches(row.digest, secret)
    return row


@pytest.mark.django_db
def test_create_api_token__last_line__is_a_working_token(client):
    # When
    token = run("create_api_token", "carol")[-1]
    # Then the user exists and the token opens the admin API
    assert get_user_model().objects.filter(username="carol").exists()
    response = client.get("/api/admin/v1/products", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response.json() == {"items": [], "count": 0}


@pytest.mark.django_db
def test_create_api_token__twice__two_tokens_both_working(client):
    first = run("create_api_token", "carol")[-1]
    second = run("create_api_token", "carol")[-1]
    assert first != second
    for token in (first, second):
        response = client.get("/api/admin/v1/products", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200


@pytest.mark.django_db
def test_demo__prints_a_live_client_key_and_a_curl_for_decide():
    # When
    lines = run("demo")
    # Then the key is a live key of the demo product
    secret = client_key_of(lines)
    key = live_client_key(secret)
    assert key.product.key == "demo-widget"
    assert key.product.user.username == "demo"
    # And the curl is ready to paste: POST decide with that key and a JSON unit
    curl = next(line for line in lines if line.startswith("curl "))
    argv = shlex.split(curl)
    assert "http://127.0.0.1:8000/api/v1/decide" in argv
    assert argv[argv.index("-X") + 1] == "POST"
    headers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]
    assert f"Authorization: Bearer {secret}" in headers
    assert "Content-Type: application/json" in headers
    assert argv[argv.index("-d") + 1] == '{"unit": "SN-0001"}'


@pytest.mark.django_db
def test_demo__pasted_curl__decides_every_demo_experiment(client):
    # Given the curl the demo printed
    curl = next(line for line in run("demo") if line.startswith("curl "))
    argv = shlex.split(curl)
    url = next(arg for arg in argv if arg.startswith("http://"))
    headers = dict(argv[i + 1].split(": ", 1) for i, arg in enumerate(argv) if arg == "-H")
    # When it is sent
    response = client.post(
        url.removeprefix("http://127.0.0.1:8000"),
        data=argv[argv.index("-d") + 1],
        content_type=headers["Content-Type"],
        HTTP_AUTHORIZATION=headers["Authorization"],
    )
    # Then the unit gets a variant (or null, outside coverage) of each running experiment
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["unit"] == "SN-0001"
    variants = {e.key: {v.key for v in e.variants.all()} | {None} for e in Experiment.objects.all()}
    assert body["variants"].keys() == variants.keys()
    for experiment, variant in body["variants"].items():
        assert variant in variants[experiment]


@pytest.mark.django_db
def test_demo__seeds_running_experiments_on_an_enabled_product():
    run("demo")
    product = Product.objects.get(key="demo-widget")
    assert product.status == Status.ENABLED
    experiments = {e.key: e for e in Experiment.objects.filter(product=product)}
    assert len(experiments) == 3
    assert all(e.status == Status.ENABLED for e in experiments.values())
    for experiment in experiments.values():
        assert 2 <= experiment.variants.filter(status=Status.ENABLED).count() <= 3
    assert any(e.variants.filter(is_control=True).exists() for e in experiments.values())
    assert any(e.coverage == 0.5 for e in experiments.values())
    assert any(e.step is not None and e.step.key == "etch" for e in experiments.values())
    metric = Metric.objects.get(product=product)
    assert metric.lower_limit < metric.nominal < metric.upper_limit


@pytest.mark.django_db
def test_demo__run_twice__reuses_the_product_and_issues_a_second_working_key():
    # Given
    first = client_key_of(run("demo"))
    # When
    lines = run("demo")
    # Then nothing is duplicated, and both keys work
    second = client_key_of(lines)
    assert any("reused" in line for line in lines)
    assert Product.objects.filter(key="demo-widget").count() == 1
    assert Experiment.objects.count() == 3
    assert Variant.objects.count() == 7
    assert first != second
    live_client_key(first)
    live_client_key(second)


@pytest.mark.django_db
def test_demo__rerun__keeps_what_an_operator_changed():
    # Given the operator paused an experiment of the demo
    run("demo")
    Experiment.objects.filter(key="coating").update(status=Status.DISABLED)
    # When
    lines = run("demo")
    # Then it stays paused, and the output lists the running ones only
    assert Experiment.objects.get(key="coating").status == Status.DISABLED
    assert "Enabled experiments: etch-time, anneal-temp" in lines


@pytest.mark.django_db
def test_demo__fixed_salts__every_install_answers_as_the_docs_show(client):
    # Given a demo seeded on a fresh database (the docs' examples show these answers)
    secret = client_key_of(run("demo"))
    assert dict(Experiment.objects.values_list("key", "salt")) == DEMO_SALTS

    def decide(unit):
        response = client.post(
            "/api/v1/decide",
            data={"unit": unit},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        assert response.status_code == 200, response.content
        return response.json()["variants"]

    # Then SN-0001 gets the documented variants, and SN-0002 is outside the coating's coverage
    assert decide("SN-0001") == {
        "etch-time": "long",
        "anneal-temp": "425c",
        "coating": "supplier-a",
    }
    assert decide("SN-0002") == {"etch-time": "short", "anneal-temp": "450c", "coating": None}


@pytest.mark.django_db
def test_demo__second_user__gets_the_same_salts():
    run("demo")
    run("demo", "--username", "other")
    for user in ("demo", "other"):
        salts = Experiment.objects.filter(product__user__username=user).values_list("key", "salt")
        assert dict(salts) == DEMO_SALTS


@pytest.mark.django_db
def test_demo__earlier_install_with_random_salts__keeps_them_and_says_so():
    # Given a demo from an earlier install, whose experiments got random salts
    run("demo")
    Experiment.objects.filter(key="coating").update(salt="0123456789abcdef0123456789abcdef")
    # When the demo runs again
    lines = run("demo")
    # Then the salt is kept (assignments stay reproducible) and the output says why the
    # answers differ from the docs
    assert Experiment.objects.get(key="coating").salt == "0123456789abcdef0123456789abcdef"
    notes = [line for line in lines if line.startswith("Note: ")]
    assert len(notes) == 1 and notes[0].startswith("Note: coating kept the random salt"), lines
