"""Tenancy: another tenant's objects answer 404 on every admin route, and stay untouched.

The sweep walks the OpenAPI schema, so a route added later is covered without editing
this file (a write route needs a valid body in BODIES, or the sweep fails and says so).
"""

import pytest

from admin_api.api import api
from lab import models
from rules.credentials import API_TOKEN_KIND, split_prefix

VALID_PATH = {
    "product": "widget",
    "experiment": "etch-time",
    "variant": "long",
    "step": "etch",
    "metric": "thickness",
    "unit": "SN-1",
    "layer": "main",
    "design": "screen",
}

BODIES = {
    ("PATCH", "/products/{product}"): {"name": "stolen"},
    ("POST", "/products/{product}/client-keys"): {"name": "stolen"},
    ("POST", "/products/{product}/steps"): {"key": "new-step"},
    ("PATCH", "/products/{product}/steps/{step}"): {"name": "stolen"},
    ("POST", "/products/{product}/metrics"): {"key": "new-metric"},
    ("PATCH", "/products/{product}/metrics/{metric}"): {"name": "stolen"},
    ("POST", "/products/{product}/experiments"): {"key": "new-experiment"},
    ("PATCH", "/products/{product}/experiments/{experiment}"): {"status": "disabled"},
    ("POST", "/products/{product}/experiments/{experiment}/variants"): {"key": "new"},
    ("PATCH", "/products/{product}/experiments/{experiment}/variants/{variant}"): {
        "status": "removed"
    },
    ("POST", "/products/{product}/experiments/{experiment}/assignments"): {
        "assignments": [{"unit": "SN-1", "variant": "short"}]
    },
    ("PUT", "/products/{product}/experiments/{experiment}/assignments/{unit}"): {
        "variant": "short"
    },
    ("POST", "/products/{product}/units"): {"units": ["SN-9"]},
    ("PATCH", "/products/{product}/units/{unit}"): {"attributes": {"line": "3"}},
    ("POST", "/products/{product}/layers"): {"key": "new-layer"},
    ("PATCH", "/products/{product}/layers/{layer}"): {"name": "stolen"},
    ("POST", "/products/{product}/designs"): {"key": "new", "factors": ["f1", "f2"], "runs": 4},
    ("POST", "/products/{product}/measurements"): {
        "measurements": [{"metric": "thickness", "unit": "SN-1", "value": 9.0}]
    },
}

# Lists of the caller's own objects: nothing of another tenant's to find there.
UNSCOPED = {("GET", "/products"), ("POST", "/products"), ("GET", "/tokens")}
# A signed plot link is its own credential, whoever sends it: its scope (the tenant of the
# token that asked for it) is tested in tests/analysis/test_plot_links.py.
UNSCOPED |= {("GET", "/plots/{link}")}
# Routes with required query parameters: valid values, so that the answer is about tenancy.
FACTORIAL_QUERY = {"experiments": "etch-time", "metric": "thickness"}
QUERIES = {
    ("GET", "/products/{product}/analysis/factorial"): FACTORIAL_QUERY,
    ("GET", "/products/{product}/analysis/factorial.svg"): FACTORIAL_QUERY,
    ("GET", "/products/{product}/experiments/{experiment}/control-chart"): {"metric": "thickness"},
    ("GET", "/products/{product}/experiments/{experiment}/control-chart.svg"): {
        "metric": "thickness",
        "variant": "long",
    },
    ("GET", "/products/{product}/experiments/{experiment}/results.svg"): {"metric": "thickness"},
    ("GET", "/products/{product}/designs/{design}/analysis"): {"metric": "thickness"},
    ("GET", "/products/{product}/designs/{design}/effects.svg"): {"metric": "thickness"},
}


def _operations():
    schema = api.get_openapi_schema()
    prefix = "/api/admin/v1"
    for path, operations in schema["paths"].items():
        for method in operations:
            yield method.upper(), path.removeprefix(prefix)


@pytest.fixture
def populated(tenant, product):
    """A product with one of everything, built through the API like a user would."""
    calls = [
        ("/products/widget/steps", {"key": "etch"}),
        ("/products/widget/layers", {"key": "main"}),
        ("/products/widget/metrics", {"key": "thickness", "lower_limit": 0.9, "upper_limit": 1.1}),
        (
            "/products/widget/experiments",
            {
                "key": "etch-time",
                "variants": [{"key": "short"}, {"key": "long"}],
                "layer": "main",
                "layer_range": [0, 0.5],
                "conditions": [{"attribute": "line", "operator": "in", "values": ["3"]}],
            },
        ),
        ("/products/widget/experiments", {"key": "f1", "variants": [{"key": "lo"}, {"key": "hi"}]}),
        ("/products/widget/experiments", {"key": "f2", "variants": [{"key": "lo"}, {"key": "hi"}]}),
        ("/products/widget/designs", {"key": "screen", "factors": ["f1", "f2"], "runs": 4}),
        (
            "/products/widget/experiments/etch-time/assignments",
            {"assignments": [{"unit": "SN-1", "variant": "long"}]},
        ),
        (
            "/products/widget/measurements",
            {"measurements": [{"metric": "thickness", "unit": "SN-1", "value": 1.0}]},
        ),
    ]
    for path, body in calls:
        response = tenant.post(path, body)
        assert response.status_code in (200, 201), (path, response.content)
    key = tenant.post("/products/widget/client-keys", {"name": "line"}).json()
    return {"key_id": key["id"], "prefix": split_prefix(tenant.token, API_TOKEN_KIND)}


def _snapshot():
    return {
        model.__name__: sorted(model.objects.values_list(flat=False).order_by("pk"))
        for model in (
            models.Product,
            models.Step,
            models.Metric,
            models.Experiment,
            models.Variant,
            models.Unit,
            models.Layer,
            models.Design,
            models.DesignFactor,
            models.Assignment,
            models.Measurement,
            models.ClientKey,
            models.AuditEvent,
            models.ApiToken,
        )
    }


def test_tenancy__every_route__another_tenants_objects_are_404(populated, other_tenant):
    # Given the first tenant's data as it stands
    before = _snapshot()
    swept = 0
    for method, template in _operations():
        if (method, template) in UNSCOPED:
            continue
        path = template.format(**VALID_PATH, **populated)
        body = BODIES.get((method, template))
        if method in ("POST", "PUT", "PATCH"):
            assert body is not None, f"add a valid body for {method} {template} to BODIES"
        # When the other tenant calls it
        if method == "GET":
            response = other_tenant.get(path, **QUERIES.get((method, template), {}))
        else:
            response = getattr(other_tenant, method.lower())(
                path, **({"body": body} if body else {})
            )
        # Then it does not exist for them
        assert response.status_code == 404, (method, path, response.status_code, response.content)
        assert response.json()["detail"]
        swept += 1
    # And nothing of the first tenant's changed
    assert _snapshot() == before
    assert swept >= 35


def test_tenancy__other_tenants_listing__shows_only_their_own(populated, other_tenant):
    assert other_tenant.get("/products").json() == {"items": [], "count": 0}
    assert other_tenant.get("/products", status="removed").json()["count"] == 0
