"""The OpenAPI documents are JSON that every reader parses the same way.

Swagger UI reads them with a YAML parser, which refuses an object with the same key twice
(JSON parsers silently keep the last): one such key made the whole admin docs page blank.
"""

import json

import pytest


def _refuse_duplicates(pairs):
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    assert not duplicated, f"keys given twice: {duplicated} in {keys}"
    return dict(pairs)


@pytest.mark.parametrize("path", ["/api/admin/v1/openapi.json", "/api/v1/openapi.json"])
def test_openapi__every_object__names_each_key_once(client, path):
    response = client.get(path)
    assert response.status_code == 200
    json.loads(response.content, object_pairs_hook=_refuse_duplicates)
