"""The benchmark product: what the load tests decide against (load_tests/README.md).

`benchmark_seed` creates (or reuses) a product with three enabled experiments, issues a
client key and an admin API token, and can pre-populate the assignments table with
`assignments` rows so that decide can be measured against a large table.

The pre-populated units are `<UNIT_PREFIX><n zero-padded to UNIT_DIGITS>` for n in
[0, units); each is assigned in every experiment. They are written with two set-based
statements per call (units, then one per experiment), never row by row: a million rows
take seconds on PostgreSQL. Their variants are spread round-robin and recorded with source
`forced`, since they were placed by the seeder and not by the hash.
"""

import math
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from lab.db import column, table
from lab.dev.seeding import product_seed
from lab.errors import BadRequest
from lab.models import Assignment, AssignmentSource, Experiment, Product, Status, Unit, Variant
from lab.services.credentials import api_token_create, client_key_create

BENCHMARK_USER = "bench"
BENCHMARK_PRODUCT = "bench"
UNIT_PREFIX = "bench-"
UNIT_DIGITS = 9
ASSIGNMENTS_MAX = 100_000_000

# Three enabled experiments with 2-3 variants each, every unit covered: a known unit
# has one stored assignment per experiment, which is the case the first target of
# docs/contract.md#9-performance-targets measures.
BENCHMARK_EXPERIMENTS = [
    {
        "key": "exp-a",
        "name": "Benchmark A",
        "variants": [{"key": "a1", "is_control": True}, {"key": "a2"}],
    },
    {
        "key": "exp-b",
        "name": "Benchmark B",
        "variants": [{"key": "b1", "is_control": True}, {"key": "b2"}, {"key": "b3"}],
    },
    {
        "key": "exp-c",
        "name": "Benchmark C",
        "variants": [{"key": "c1", "is_control": True, "weight": 2.0}, {"key": "c2"}],
    },
]
# The variant the load tests' operator toggles between enabled and disabled.
TOGGLE_EXPERIMENT = "exp-c"
TOGGLE_VARIANT = "c2"


@dataclass(frozen=True)
class BenchmarkSeed:
    product: Product
    client_key: str
    admin_token: str
    experiments: dict[str, list[str]]
    units: int
    assignments_created: int
    assignments_total: int
    created: bool = False

    def as_json(self) -> dict:
        """What a load generator needs, as the command prints it."""
        return {
            "product": self.product.key,
            "client_key": self.client_key,
            "admin_token": self.admin_token,
            "experiments": self.experiments,
            "toggle": {"experiment": TOGGLE_EXPERIMENT, "variant": TOGGLE_VARIANT},
            "known_units": {"prefix": UNIT_PREFIX, "digits": UNIT_DIGITS, "count": self.units},
            "assignments_created": self.assignments_created,
            "assignments_total": self.assignments_total,
            "created": self.created,
        }


def unit_key(number: int) -> str:
    return f"{UNIT_PREFIX}{number:0{UNIT_DIGITS}d}"


def benchmark_seed(
    *, username: str = BENCHMARK_USER, product_key: str = BENCHMARK_PRODUCT, assignments: int = 0
) -> BenchmarkSeed:
    """Create what is missing of the benchmark product and issue fresh credentials.

    With `assignments` > 0, makes sure units 0 .. ceil(assignments / 3) - 1 exist with an
    assignment in each of the three experiments (rows that exist already are kept).
    """
    if not 0 <= assignments <= ASSIGNMENTS_MAX:
        raise BadRequest(f"assignments must be between 0 and {ASSIGNMENTS_MAX}")
    with transaction.atomic():
        seeded = product_seed(
            username=username,
            key=product_key,
            name="Benchmark",
            experiments=BENCHMARK_EXPERIMENTS,
        )
        product, created = seeded.product, seeded.created
        client_key = client_key_create(product=product, name="benchmark").secret
    admin_token = api_token_create(username=username, name="benchmark").secret

    units = math.ceil(assignments / len(BENCHMARK_EXPERIMENTS))
    created_rows = assignments_seed(product=product, units=units) if units else 0
    experiments = {
        experiment.key: list(experiment.variants.order_by("id").values_list("key", flat=True))
        for experiment in Experiment.objects.filter(
            product=product, key__in=[e["key"] for e in BENCHMARK_EXPERIMENTS]
        ).order_by("id")
    }
    # Seeded units are numbered from 0 without gaps, whatever earlier calls asked for.
    seeded_units = Unit.objects.filter(product=product, key__startswith=UNIT_PREFIX).count()
    return BenchmarkSeed(
        product=product,
        client_key=client_key,
        admin_token=admin_token,
        experiments=experiments,
        units=seeded_units,
        assignments_created=created_rows,
        assignments_total=Assignment.objects.count(),
        created=created,
    )


def _names() -> dict[str, str]:
    return {
        "unit": table(Unit),
        "assignment": table(Assignment),
        "u_id": column(Unit, "id"),
        "u_product": column(Unit, "product"),
        "u_key": column(Unit, "key"),
        "u_created": column(Unit, "created_at"),
        "a_experiment": column(Assignment, "experiment"),
        "a_unit": column(Assignment, "unit"),
        "a_variant": column(Assignment, "variant"),
        "a_source": column(Assignment, "source"),
        "a_created": column(Assignment, "created_at"),
        "a_updated": column(Assignment, "updated_at"),
    }


def _series_sql() -> tuple[str, str]:
    """A FROM clause yielding n in [%s, %s], and the unit key expression over it."""
    if connection.vendor == "postgresql":
        return (
            "generate_series(%s::bigint, %s::bigint) AS g(n)",
            f"%s || lpad(g.n::text, {UNIT_DIGITS}, '0')",
        )
    # SQLite: a recursive CTE stands in for generate_series (not built in everywhere).
    return ("g", f"%s || printf('%%0{UNIT_DIGITS}d', g.n)")


@transaction.atomic
def assignments_seed(*, product: Product, units: int) -> int:
    """Ensure units 0 .. units-1 exist and are assigned in every enabled experiment.

    Returns the number of assignment rows inserted (existing ones are left alone).
    """
    n = _names()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    series, key_expr = _series_sql()
    if connection.vendor == "postgresql":
        prefix_sql = ""
        series_params: list = [0, units - 1]
    else:
        prefix_sql = (
            "WITH RECURSIVE g(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
        )
        series_params = [0, units - 1]
    unit_sql = (
        f"{prefix_sql}INSERT INTO {n['unit']} ({n['u_product']}, {n['u_key']}, {n['u_created']}) "
        # WHERE true: SQLite needs it to parse an upsert after INSERT ... SELECT.
        f"SELECT %s, {key_expr}, %s FROM {series} WHERE true "
        f"ON CONFLICT ({n['u_product']}, {n['u_key']}) DO NOTHING"
    )
    if connection.vendor == "postgresql":
        unit_params = [product.pk, UNIT_PREFIX, now, *series_params]
    else:
        unit_params = [*series_params, product.pk, UNIT_PREFIX, now]

    inserted = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A seed of 10^6 rows is not a request: each statement inserts a third of them,
            # with their triggers, for longer than a request's statement_timeout allows.
            cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(unit_sql, unit_params)
        experiments = Experiment.objects.filter(product=product, status=Status.ENABLED).order_by(
            "id"
        )
        for offset, experiment in enumerate(experiments):
            variant_ids = list(
                Variant.objects.filter(experiment=experiment, status=Status.ENABLED)
                .order_by("id")
                .values_list("id", flat=True)
            )
            if not variant_ids:
                continue
            # Round-robin over the variants, shifted per experiment so the combinations vary.
            choice = " ".join(f"WHEN {index} THEN %s" for index in range(len(variant_ids)))
            cursor.execute(
                f"INSERT INTO {n['assignment']} ({n['a_experiment']}, {n['a_unit']}, "
                f"{n['a_variant']}, {n['a_source']}, {n['a_created']}, {n['a_updated']}) "
                f"SELECT %s, u.{n['u_id']}, CASE (u.{n['u_id']} + %s) %% %s {choice} END, "
                f"%s, %s, %s "
                f"FROM {n['unit']} u "
                f"WHERE u.{n['u_product']} = %s AND u.{n['u_key']} BETWEEN %s AND %s "
                f"ORDER BY u.{n['u_id']} "
                f"ON CONFLICT ({n['a_experiment']}, {n['a_unit']}) DO NOTHING",
                [
                    experiment.pk,
                    offset,
                    len(variant_ids),
                    *variant_ids,
                    AssignmentSource.FORCED,
                    now,
                    now,
                    product.pk,
                    unit_key(0),
                    unit_key(units - 1),
                ],
            )
            inserted += cursor.rowcount
    return inserted
