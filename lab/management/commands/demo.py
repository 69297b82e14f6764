from django.core.management.base import BaseCommand

from lab.dev.demo import DEMO_UNIT, demo_seed
from lab.models import Status


class Command(BaseCommand):
    help = (
        "Create the demo product (or reuse it) with running experiments, then print a new "
        "client key and a ready-to-paste curl for decide."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo", help="the tenant owning the demo")
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="where the service listens"
        )

    def handle(self, *args, username: str, base_url: str, **options):
        seed = demo_seed(username=username)
        product = seed.product
        experiments = ", ".join(
            product.experiments.filter(status=Status.ENABLED)
            .order_by("id")
            .values_list("key", flat=True)
        )
        state = "created" if seed.created else "already there, reused"
        self.stdout.write(f"Demo product {product.key!r} of user {username!r}: {state}.")
        self.stdout.write(f"Enabled experiments: {experiments or 'none'}")
        if product.status != Status.ENABLED:
            self.stdout.write(
                f"Note: the product is {product.status}, so decide answers null for every "
                "experiment until it is enabled again."
            )
        if seed.random_salts:
            self.stdout.write(
                "Note: " + ", ".join(seed.random_salts) + " kept the random salt of an earlier"
                " install, so their answers differ from the examples in the docs (a salt never"
                " changes). For the documented answers, start from a new database or run"
                " `python manage.py demo --username NAME` with a user that has no demo yet."
            )
        self.stdout.write(f"Client key: {seed.client_key}")
        self.stdout.write(f"Decide for unit {DEMO_UNIT}:")
        self.stdout.write(
            f"curl -s -X POST {base_url.rstrip('/')}/api/v1/decide"
            f" -H 'Authorization: Bearer {seed.client_key}'"
            " -H 'Content-Type: application/json'"
            f""" -d '{{"unit": "{DEMO_UNIT}"}}'"""
        )
