"""The demo product: something to decide against a minute after checking out the code.

`demo_seed` is idempotent: objects that exist are reused as they are (an operator may
have changed them since), missing ones are created. Client keys are stored hashed, so
an earlier key cannot be shown again: every run issues a new one; earlier ones keep
working until they are revoked.

The demo's experiments get fixed salts (`DEMO_SALTS`) instead of random ones, so that
every install answers the same for the same unit and the docs can show real answers
(docs/contract.md#10-the-demo-product). An experiment that already exists keeps its salt: a salt
is immutable, since changing it would re-bucket every unit not yet assigned.
"""

from dataclasses import dataclass

from django.db import transaction

from lab.dev.seeding import product_seed
from lab.models import Experiment, Product
from lab.services.config_version import product_config_changed
from lab.services.credentials import client_key_create

DEMO_PRODUCT = "demo-widget"
DEMO_UNIT = "SN-0001"

# Fixed, public salts: with them SN-0001 gets etch-time "long", anneal-temp "425c" and
# coating "supplier-a" on every install (SN-0002 is outside the coating's coverage).
DEMO_SALTS = {
    "etch-time": "c5445fff3494b2b6b05415ef244e78bf",
    "anneal-temp": "29029e50570f2d52a811467b056d1365",
    "coating": "317bf3e7d314ff2f45ab67413d8b6fff",
}

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
    # Experiments of an earlier install whose salts are not the fixed ones: they answer
    # differently from the docs' examples (and keep doing so: a salt never changes).
    random_salts: tuple[str, ...] = ()


@transaction.atomic
def demo_seed(*, username: str = "demo") -> DemoSeed:
    """Create what is missing of the demo product of `username` and issue a client key."""
    existing = set(
        Experiment.objects.filter(
            product__user__username=username, product__key=DEMO_PRODUCT
        ).values_list("key", flat=True)
    )
    seeded = product_seed(
        username=username,
        key=DEMO_PRODUCT,
        name="Demo widget",
        steps=DEMO_STEPS,
        experiments=DEMO_EXPERIMENTS,
        metrics=DEMO_METRICS,
    )
    product, created = seeded.product, seeded.created
    new = [key for key in DEMO_SALTS if key not in existing]
    for key in new:
        Experiment.objects.filter(product=product, key=key).update(salt=DEMO_SALTS[key])
    if new:
        product_config_changed(product)
    stored = Experiment.objects.filter(product=product, key__in=DEMO_SALTS).order_by("id")
    random_salts = tuple(
        key for key, salt in stored.values_list("key", "salt") if salt != DEMO_SALTS[key]
    )

    issued = client_key_create(product=product, name="demo")
    return DemoSeed(
        product=product, client_key=issued.secret, created=created, random_salts=random_salts
    )
