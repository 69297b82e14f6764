"""Seed a product for the failure drills and the contract tests; print its credentials.

The last line of output is one JSON object: {"admin_token", "client_key", "product",
"experiments": {experiment key: [variant keys]}}. Run it against an empty database: every
object is created fresh and a duplicate key answers an error.
"""

import json

from django.core.management.base import BaseCommand
from django.db import transaction

from lab.services.credentials import api_token_create, client_key_create
from lab.services.experiments import experiment_create
from lab.services.products import product_create

DRILL_USER = "drill"
DRILL_PRODUCT = "widget"

# Every experiment covers every unit, so each decision of a drill stores one assignment per
# experiment; "knob" is the one the drills toggle to change the config version.
DRILL_EXPERIMENTS = {
    "color": {"variants": ["red", "blue"]},
    "size": {"variants": ["s", "m", "l"]},
    "layout": {"variants": ["grid", "list"]},
    "knob": {"variants": ["on", "off"]},
}


class Command(BaseCommand):
    help = "Create the drill tenant, product, experiments and keys; print them as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=DRILL_USER)
        parser.add_argument("--product", default=DRILL_PRODUCT)

    def handle(self, *args, username: str, product: str, **options):
        with transaction.atomic():
            token = api_token_create(username=username, name="drill")
            product_obj = product_create(user=token.row.user, key=product, name="Drill widget")
            for key, spec in DRILL_EXPERIMENTS.items():
                experiment_create(
                    product=product_obj,
                    key=key,
                    variants=[{"key": variant} for variant in spec["variants"]],
                )
            client_key = client_key_create(product=product_obj, name="drill")
        self.stdout.write(
            json.dumps(
                {
                    "admin_token": token.secret,
                    "client_key": client_key.secret,
                    "product": product_obj.key,
                    "experiments": {k: v["variants"] for k, v in DRILL_EXPERIMENTS.items()},
                }
            )
        )
