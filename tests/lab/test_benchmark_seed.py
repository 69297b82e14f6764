"""`manage.py seed_benchmark` (lab/dev/benchmark_seed.py): a bulk seed is not a request, so a
request's statement_timeout does not bound it."""

import pytest
from django.db import connection

from lab.dev.benchmark_seed import benchmark_seed
from lab.models import Assignment
from tests.conftest import requires_postgres


@pytest.mark.django_db
def test_seed__statement_timeout_far_below_its_statements__seeds_every_assignment():
    requires_postgres()
    # Given a session whose statements may run 1 ms (the requests' bound is 5 s: a seed of
    # 10^6 assignments inserts a third of them per statement, with their triggers)
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 1")
    try:
        # When the benchmark's product is seeded with 3,000 assignments
        seeded = benchmark_seed(
            username="seed-timeout", product_key="seed-timeout", assignments=3000
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET statement_timeout")
    # Then every one is stored
    assert seeded.assignments_created == seeded.assignments_total == 3000
    assert Assignment.objects.filter(experiment__product__key="seed-timeout").count() == 3000
