"""Signed plot links (docs/results.md §13): the JSON answers that have a picture carry a link
that opens it without the bearer token, for PLOT_LINK_MAX_AGE_SECONDS, for that tenant only."""

import dataclasses
import itertools
import time
from urllib.parse import urlsplit

import pytest
import requests
from django.test import Client

from lab.analysis.links import Plot, plot_link_sign
from lab.services.credentials import api_token_create, api_token_revoke
from tests import browser
from tests.analysis.browser import non_white_share
from tests.analysis.test_designs import DESIGNS, build

BASE = "/products/widget"


@pytest.fixture
def measured(plant):
    plant.experiment("etch", ["short", "long"])
    plant.experiment("anneal", ["cool", "hot"])
    plant.metric("thickness", lower_limit=0.9, upper_limit=1.1, unit_of_measure="mm")
    for i, (etch, anneal) in enumerate(itertools.product(["short", "long"], ["cool", "hot"])):
        values = [1.0 + 0.03 * i + 0.01 * ((j * 7) % 5 - 2) for j in range(6)]
        plant.units([{"etch": etch, "anneal": anneal}] * len(values), {"thickness": values})
    return plant


def open_without_token(url: str):
    """What a browser gets for the link: no Authorization header."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.netloc == "testserver", url
    return Client().get(f"{parts.path}?{parts.query}" if parts.query else parts.path)


def links_of(tenant) -> dict[str, str]:
    """The plot links of each JSON answer that has a picture, by the picture's endpoint."""
    results = tenant.get(f"{BASE}/experiments/etch/results").json()
    chart = tenant.get(f"{BASE}/experiments/etch/control-chart", metric="thickness").json()
    factorial = tenant.get(
        f"{BASE}/analysis/factorial", experiments="etch,anneal", metric="thickness"
    ).json()
    (thickness,) = results["metrics"]
    return {
        "/experiments/etch/results.svg?metric=thickness": thickness["plot_url"],
        "/experiments/etch/control-chart.svg?metric=thickness&variant=long": chart["variants"][
            "long"
        ]["plot_url"],
        "/analysis/factorial.svg?experiments=etch,anneal&metric=thickness": factorial["plot_url"],
    }


def test_plot_links__each_json_answer__link_opens_its_picture_without_token(tenant, measured):
    for endpoint, url in links_of(tenant).items():
        # When the link is opened as a browser would, without the bearer token
        opened = open_without_token(url)
        # Then the same picture as the authenticated endpoint draws
        assert opened.status_code == 200, (endpoint, opened.content)
        assert opened["Content-Type"] == "image/svg+xml"
        assert opened["Referrer-Policy"] == "no-referrer"
        path, _, query = endpoint.partition("?")
        direct = tenant.get(BASE + path, **dict(p.split("=") for p in query.split("&")))
        assert opened.content == direct.content, endpoint


def test_plot_links__design_analysis__link_opens_the_effects_plot(tenant, plant):
    build(tenant, plant, list("abc"), 4, [2, 2, 2, 2], [float(i) for i in range(8)])
    report = tenant.get(f"{DESIGNS}/d/analysis", metric="y").json()
    opened = open_without_token(report["plot_url"])
    assert opened.status_code == 200, opened.content
    assert "half-normal quantile" in opened.content.decode()


def test_plot_links__altered__403_json(tenant, measured):
    url = links_of(tenant)["/analysis/factorial.svg?experiments=etch,anneal&metric=thickness"]
    # A character of the payload changed
    head, _, signature = url.rpartition(":")
    altered = f"{head[:-3]}{'A' if head[-3] != 'A' else 'B'}{head[-2:]}:{signature}"
    for bad in (altered, url + "x", url.rsplit("/", 1)[0] + "/not-a-link"):
        response = open_without_token(bad)
        assert response.status_code == 403, (bad, response.content)
        assert "altered" in response.json()["detail"]


def test_plot_links__expired__410_json(tenant, measured, settings):
    url = links_of(tenant)["/experiments/etch/results.svg?metric=thickness"]
    assert open_without_token(url).status_code == 200
    # When the link is older than the lifetime (any age is, past a lifetime of 0 s)
    settings.PLOT_LINK_MAX_AGE_SECONDS = 0
    time.sleep(0.01)
    response = open_without_token(url)
    assert response.status_code == 410
    assert "expired" in response.json()["detail"]


def test_plot_links__token_revoked__403(tenant, measured):
    from django.contrib.auth import get_user_model

    issued = api_token_create(username="alice", name="short-lived")
    tenant = dataclasses.replace(tenant, token=issued.secret)
    url = links_of(tenant)["/experiments/etch/results.svg?metric=thickness"]
    assert open_without_token(url).status_code == 200
    user = get_user_model().objects.get(username="alice")
    api_token_revoke(user=user, prefix=issued.row.prefix)
    response = open_without_token(url)
    assert response.status_code == 403 and "revoked" in response.json()["detail"]


def test_plot_links__signed_for_another_tenant__404(other_tenant, measured):
    # Given a link signed by this server for mallory's token, naming alice's product
    prefix = api_token_create(username="mallory").row.prefix
    signed = plot_link_sign(
        token_prefix=prefix, plot=Plot("results", "widget", "thickness", target="etch")
    )
    # Then it draws nothing of alice's
    response = Client().get(f"/api/admin/v1/plots/{signed}")
    assert response.status_code == 404 and response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_plot_links__opened_in_chromium__the_picture_renders(
    live_server, tenant, measured, tmp_path
):
    # Given the JSON answer of a real server
    answer = requests.get(
        f"{live_server.url}/api/admin/v1{BASE}/analysis/factorial",
        params={"experiments": "etch,anneal", "metric": "thickness"},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.content
    url = answer.json()["plot_url"]
    assert url.startswith(live_server.url)
    # When Chromium opens its link (no token: a browser sends none)
    dom = browser.render_dom(url)
    shot = browser.screenshot(url, tmp_path / "plot.png", width=1000, height=700)
    # Then it shows the picture: an SVG document, drawn with a fair share of ink
    from PIL import Image

    assert "<svg" in dom and "interaction of etch × anneal" in dom
    with Image.open(shot) as image:
        assert 0.01 < non_white_share(image.convert("RGB")) < 0.9
