import json

from django.core.management.base import BaseCommand, CommandError

from lab.dev.benchmark_seed import BENCHMARK_PRODUCT, BENCHMARK_USER, benchmark_seed
from lab.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Create the load tests' product (three enabled experiments) or reuse it, optionally "
        "with N pre-existing assignments, and print its client key and an admin token as "
        "one line of JSON (the last line of output)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default=BENCHMARK_USER, help="the tenant owning it")
        parser.add_argument("--product", default=BENCHMARK_PRODUCT, help="the product key")
        parser.add_argument(
            "--assignments",
            type=int,
            default=0,
            metavar="N",
            help="make sure about N assignment rows exist: ceil(N/3) units, each assigned "
            "in the three experiments (set-based inserts: 10^6 rows take seconds)",
        )

    def handle(self, *args, username: str, product: str, assignments: int, **options):
        try:
            seed = benchmark_seed(username=username, product_key=product, assignments=assignments)
        except ApplicationError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(json.dumps(seed.as_json(), separators=(",", ":")))
