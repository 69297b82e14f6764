"""Each unit's levels in a design, kept by the database (lab.models.DesignUnit).

The analysis of a design groups the measured units by the combination of their stored levels.
Computed from the assignments it reads one row per unit and factor (7·10^6 rows for 10^6 units
of a seven-factor design, 3.1 s on two cores: load_tests/RESULTS.md, "Design analysis: the
levels kept per unit"); kept per unit it reads one. On PostgreSQL, statement triggers on the
assignments add each written row's bits to its unit's code in every design the row's
experiment is a factor of and take away the bits of the row it replaced or deleted — decide,
forcing, rebucketing and any SQL alike — and the codes of the designs that exist already are
filled here from their assignments. SQLite has no statement triggers with transition tables:
there the table stays empty and the analysis computes the codes from the assignments.

A delete only updates (a unit being deleted loses its code rows first or after, and a code
row must not be created for it); an insert or an update inserts the code row if it is
missing, in (design, unit) order, so that two statements lock code rows in the same order.
"""

import django.db.models.deletion
from django.db import migrations, models

# The bits of an assignment row `r` in the design of factor `f` (lab.analysis.designs,
# level_code): bit 2j for the factor's low variant, 2j + 1 for its high one, none otherwise.
_BITS = (
    "CASE r.variant_id WHEN f.low_id THEN CAST(1 AS BIGINT) << (2 * f.position) "
    "WHEN f.high_id THEN CAST(2 AS BIGINT) << (2 * f.position) ELSE 0 END"
)

_ADD = f"""
    INSERT INTO lab_designunit (design_id, unit_id, code)
    SELECT design_id, unit_id, SUM(bits) FROM (
        SELECT f.design_id, r.unit_id, {_BITS} AS bits
        FROM new_rows r JOIN lab_designfactor f ON f.experiment_id = r.experiment_id
        UNION ALL
        SELECT f.design_id, r.unit_id, -({_BITS})
        FROM old_rows r JOIN lab_designfactor f ON f.experiment_id = r.experiment_id
    ) changed
    GROUP BY design_id, unit_id
    HAVING SUM(bits) <> 0
    ORDER BY design_id, unit_id
    ON CONFLICT (design_id, unit_id) DO UPDATE SET code = lab_designunit.code + EXCLUDED.code
"""

FORWARD = [
    f"""
    CREATE FUNCTION lab_design_units_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO lab_designunit (design_id, unit_id, code)
        SELECT f.design_id, r.unit_id, SUM({_BITS})
        FROM new_rows r JOIN lab_designfactor f ON f.experiment_id = r.experiment_id
        GROUP BY f.design_id, r.unit_id
        ORDER BY f.design_id, r.unit_id
        ON CONFLICT (design_id, unit_id)
            DO UPDATE SET code = lab_designunit.code + EXCLUDED.code;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION lab_design_units_updated() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        {_ADD};
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION lab_design_units_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE lab_designunit u SET code = u.code - d.bits
        FROM (
            SELECT f.design_id, r.unit_id, SUM({_BITS}) AS bits
            FROM old_rows r JOIN lab_designfactor f ON f.experiment_id = r.experiment_id
            GROUP BY f.design_id, r.unit_id
        ) d
        WHERE u.design_id = d.design_id AND u.unit_id = d.unit_id AND d.bits <> 0;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER lab_assignment_design_units_inserted
    AFTER INSERT ON lab_assignment REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_design_units_inserted()
    """,
    """
    CREATE TRIGGER lab_assignment_design_units_updated
    AFTER UPDATE ON lab_assignment REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_design_units_updated()
    """,
    """
    CREATE TRIGGER lab_assignment_design_units_deleted
    AFTER DELETE ON lab_assignment REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lab_design_units_deleted()
    """,
    # The designs that exist: their codes from the assignments, writers of assignments held
    # off until this commits (a write after it goes through the triggers above).
    "LOCK TABLE lab_assignment IN SHARE MODE",
    f"""
    INSERT INTO lab_designunit (design_id, unit_id, code)
    SELECT f.design_id, r.unit_id, SUM({_BITS})
    FROM lab_assignment r JOIN lab_designfactor f ON f.experiment_id = r.experiment_id
    GROUP BY f.design_id, r.unit_id
    """,
]
BACKWARD = [
    f"DROP TRIGGER lab_assignment_design_units_{event} ON lab_assignment"
    for event in ("inserted", "updated", "deleted")
] + [
    f"DROP FUNCTION lab_design_units_{event}()" for event in ("inserted", "updated", "deleted")
]

def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("lab", "0011_design_runs_check_as_ors")]

    operations = [
        migrations.CreateModel(
            name="DesignUnit",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("code", models.BigIntegerField()),
                (
                    "design",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="lab.design",
                    ),
                ),
                (
                    "unit",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="lab.unit",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("design", "unit"), name="design_unit_unique")
                ],
            },
        ),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False),
    ]
