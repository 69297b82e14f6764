"""Migrations: in step with the models, building the constraints the models declare.

pytest-django builds the test database by running every migration from zero, so each
run of the suite on PostgreSQL is also a from-scratch migration of a real server.
"""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import CheckConstraint, UniqueConstraint

from tests.conftest import requires_postgres


def declared(kind) -> set[tuple[str, str]]:
    """(table, name) of every constraint of `kind` that the lab models declare."""
    return {
        (model._meta.db_table, constraint.name)
        for model in apps.get_app_config("lab").get_models()
        for constraint in model._meta.constraints
        if isinstance(constraint, kind)
    }


@pytest.mark.django_db
def test_migrations__models_changed__a_migration_exists_for_it():
    output = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=output, stderr=output)
    except SystemExit:
        pytest.fail(f"models changed without a migration:\n{output.getvalue()}")


@pytest.mark.django_db
def test_migrations__applied__every_declared_constraint_and_index_exists():
    # Given what the models declare
    wanted = {
        (model._meta.db_table, name)
        for model in apps.get_app_config("lab").get_models()
        for name in [c.name for c in model._meta.constraints]
        + [i.name for i in model._meta.indexes]
    }
    # When the migrated schema is read back
    with connection.cursor() as cursor:
        present = {
            (table, name)
            for table in {table for table, _ in wanted}
            for name in connection.introspection.get_constraints(cursor, table)
        }
    # Then
    assert wanted - present == set()


@pytest.mark.django_db
def test_migrations__postgres__check_constraints_enforced_by_the_server():
    requires_postgres()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT rel.relname, con.conname FROM pg_constraint con"
            " JOIN pg_class rel ON rel.oid = con.conrelid"
            " WHERE con.contype = 'c' AND con.convalidated"
        )
        checks = set(cursor.fetchall())
        cursor.execute(
            "SELECT rel.relname, con.conname FROM pg_constraint con"
            " JOIN pg_class rel ON rel.oid = con.conrelid WHERE con.contype = 'u'"
        )
        uniques = set(cursor.fetchall())
        cursor.execute("SELECT tablename, indexname FROM pg_indexes WHERE indexdef LIKE '%UNIQUE%'")
        unique_indexes = set(cursor.fetchall())
    assert declared(CheckConstraint) - checks == set()
    assert {
        ("lab_metric", "metric_lower_le_upper"),
        ("lab_variant", "variant_weight_non_negative"),
    } <= checks
    # A conditional unique constraint (one control per experiment) is a partial unique index.
    assert declared(UniqueConstraint) - uniques - unique_indexes == set()


@pytest.mark.django_db(transaction=True)
def test_migrations__reversible__down_to_zero_and_up_again():
    # Given a fully migrated database
    executor = MigrationExecutor(connection)
    leaves = [key for key in executor.loader.graph.leaf_nodes() if key[0] == "lab"]
    try:
        # When the lab app is migrated down to nothing
        call_command("migrate", "lab", "zero", verbosity=0)
        with connection.cursor() as cursor:
            tables = connection.introspection.table_names(cursor)
        # Then its tables are gone
        assert not [t for t in tables if t.startswith("lab_")]
    finally:
        # And it migrates up again (the rest of the suite needs the schema)
        call_command("migrate", "lab", leaves[0][1], verbosity=0)
    with connection.cursor() as cursor:
        assert "lab_assignment" in connection.introspection.table_names(cursor)


@pytest.mark.django_db
def test_migrations__no_index_that_a_composite_index_already_leads_with():
    # Given every index of the lab tables, as the migrated database has them
    with connection.cursor() as cursor:
        tables = [t for t in connection.introspection.table_names(cursor) if t.startswith("lab_")]
        indexes = {
            (table, name): (tuple(info["columns"]), bool(info.get("unique")), info)
            for table in tables
            for name, info in connection.introspection.get_constraints(cursor, table).items()
            if info["index"] or info["unique"]
        }
    # Then no plain single-column index duplicates the first column of a composite one: it
    # would be a write cost, and the plan an unanalyzed database picks for the hot path
    redundant = [
        (table, name)
        for (table, name), (columns, unique, _) in indexes.items()
        if len(columns) == 1
        and not unique
        and any(
            other_table == table and len(other[0]) > 1 and other[0][0] == columns[0]
            for (other_table, _), other in indexes.items()
        )
    ]
    assert redundant == []
