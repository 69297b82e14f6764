"""The interactive API docs render in a real browser, with nothing fetched from the internet.

Swagger UI's assets ship inside django-ninja and are served by Lab itself (WhiteNoise, see
docs/operations.md, "Static files"): a page that only came back as HTML would still be blank
if its scripts or stylesheet failed, so these tests look at the DOM after the scripts ran.
"""

import pytest

from tests.browser import render_dom, screenshot

pytestmark = pytest.mark.e2e

DOCS = {
    "/api/v1/docs": ["/api/v1/decide", "/api/v1/decide/batch", "/ofrep/v1/evaluate/flags"],
    "/api/admin/v1/docs": [
        "/api/admin/v1/products",
        "/api/admin/v1/products/{product}/experiments",
    ],
}


@pytest.mark.parametrize("page", sorted(DOCS))
def test_api_docs__opened_in_chromium__swagger_ui_lists_the_operations(server, page):
    # Given Lab under gunicorn (the production command)
    # When a browser opens the docs page and runs its scripts
    dom = render_dom(server.url(page))

    # Then Swagger UI replaced the empty placeholder with one block per operation
    assert 'class="swagger-ui' in dom, dom[:2000]
    assert dom.count('class="opblock opblock-') >= len(DOCS[page]), dom[:2000]
    for operation_path in DOCS[page]:
        assert f'data-path="{operation_path}"' in dom, f"{operation_path} not rendered on {page}"
    assert "Failed to load API definition" not in dom


def test_api_docs__screenshot__is_a_png_of_the_page(server, tmp_path):
    shot = screenshot(server.url("/api/v1/docs"), tmp_path / "docs.png", width=800, height=600)

    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    # A blank 800x600 page compresses to about 1 kB; Swagger UI's header and blocks do not.
    assert len(data) > 10_000, len(data)
