"""The API docs' assets are served by Lab itself, in the embedded default too."""

import re

import pytest

DOCS_PAGES = ["/api/v1/docs", "/api/admin/v1/docs"]


@pytest.mark.parametrize("page", DOCS_PAGES)
def test_docs_page__every_asset_it_references__answers_200(client, page):
    # Given the docs page as a browser receives it
    response = client.get(page)
    assert response.status_code == 200
    assets = re.findall(r'(?:href|src)="([^"]+)"', response.content.decode())
    assert {"/static/ninja/swagger-ui.css", "/static/ninja/swagger-ui-bundle.js"} <= set(assets)

    # When the browser fetches what the page references, Then every asset is there,
    # with the content type a browser needs to apply it
    for asset in assets:
        fetched = client.get(asset)
        assert fetched.status_code == 200, asset
        expected = (
            "text/css"
            if asset.endswith(".css")
            else "image"
            if "favicon" in asset
            else "javascript"
        )
        assert expected in fetched["Content-Type"], (asset, fetched["Content-Type"])
        assert b"".join(fetched.streaming_content if fetched.streaming else [fetched.content])


def test_static__unknown_file__answers_json_404(client):
    response = client.get("/static/ninja/nothing-here.js")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
