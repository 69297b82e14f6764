"""The demo product: something to decide against a minute after checking out the code.

`demo_seed` is idempotent: objects that exist are reused as they are (an operator may
have changed them since), missing ones are created. Client keys are stored hashed, so
an earlier key cannot be shown again: every run issues a new one; earlier ones keep
working until they are revoked.
"""

from dataclasses import dataclass

from django.db import transaction

from lab.models import Product
from lab.services.credentials import client_key_create
from lab.services.seeding import product_seed

DEMO_PRODUCT = "demo-widget"
DEMO_UNIT = "SN-0001"

DEMO_STEPS = [
    {"key": "etch", "name": "Etch", "position": 10},
    {"key": "anneal", "name": "Anneal", "position": 20},
]

DEMO_EXPERIMENTS = [
    {
        "key": "etch-time",
        "name": "Etch time",
        "description": "Does a longer etch bring the film closer to nominal?",
        "step": "etch",
        "variants": [
            {"key": "short", "name": "45 s"},
            {"key": "long", "name": "60 s"},
        ],
    },
    {
        "key": "anneal-temp",
        "name": "Anneal temperature",
        "description": "Two hotter anneals against the process of record.",
        "step": "anneal",
        "variants": [
            {"key": "400c", "name": "400 °C (process of record)", "is_control": True},
            {"key": "425c", "name": "425 °C"},
            {"key": "450c", "name": "450 °C"},
        ],
    },
    {
        "key": "coating",
        "name": "Coating supplier",
        "description": "Half of the units take part; of those, two in three get supplier A.",
        "coverage": 0.5,
        "variants": [
            {"key": "supplier-a", "name": "Supplier A", "weight": 2.0},
            {"key": "supplier-b", "name": "Supplier B", "weight": 1.0},
        ],
    },
]

DEMO_METRICS = [
    {
        "key": "thickness",
        "name": "Film thickness",
        "step": "etch",
        "lower_limit": 0.9,
        "nominal": 1.0,
        "upper_limit": 1.1,
        "unit_of_measure": "um",
    },
]


@dataclass(frozen=True)
class DemoSeed:
    product: Product
    client_key: str
    created: bool


@transaction.atomic
def demo_seed(*, username: str = "demo") -> DemoSeed:
    """Create what is missing of the demo product of `username` and issue a client key."""
    seeded = product_seed(
        username=username,
        key=DEMO_PRODUCT,
        name="Demo widget",
        steps=DEMO_STEPS,
        experiments=DEMO_EXPERIMENTS,
        metrics=DEMO_METRICS,
    )
    product, created = seeded.product, seeded.created

    issued = client_key_create(product=product, name="demo")
    return DemoSeed(product=product, client_key=issued.secret, created=created)
