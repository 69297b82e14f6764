"""Notify decide's workers of design changes, per product, like the tables of 0007.

decide.config reads designs and their factors with a product's experiments; every design
write also bumps the product's config version (a product notification), and these triggers
make the two tables notify by themselves too, so that decide.memory's rule holds: every table
decide reads has a notifying trigger, including TRUNCATE (tests/decide/test_memory_triggers.py).
A factor reaches its product through its design (`*` when the design is already gone).
"""

from django.db import migrations

FORWARD = [
    """
    CREATE FUNCTION lab_decide_notify_rows_of_designs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            PERFORM lab_decide_notify_products(ARRAY(SELECT DISTINCT d.product_id
                FROM new_rows r LEFT JOIN lab_design d ON d.id = r.design_id));
        ELSIF TG_OP = 'UPDATE' THEN
            PERFORM lab_decide_notify_products(ARRAY(SELECT DISTINCT d.product_id
                FROM (SELECT design_id FROM old_rows UNION SELECT design_id FROM new_rows) r
                LEFT JOIN lab_design d ON d.id = r.design_id));
        ELSE
            PERFORM lab_decide_notify_products(ARRAY(SELECT DISTINCT d.product_id
                FROM old_rows r LEFT JOIN lab_design d ON d.id = r.design_id));
        END IF;
        RETURN NULL;
    END $$
    """,
]
BACKWARD = []
for _table, _function in (
    ("lab_design", "lab_decide_notify_rows_of_products"),
    ("lab_designfactor", "lab_decide_notify_rows_of_designs"),
):
    FORWARD += [
        f"""
        CREATE TRIGGER {_table}_decide_notify_inserted
        AFTER INSERT ON {_table} REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_updated
        AFTER UPDATE ON {_table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_deleted
        AFTER DELETE ON {_table} REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_truncated
        AFTER TRUNCATE ON {_table} FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_all()
        """,
    ]
    BACKWARD += [
        f"DROP TRIGGER {_table}_decide_notify_{event} ON {_table}"
        for event in ("inserted", "updated", "deleted", "truncated")
    ]
BACKWARD.append("DROP FUNCTION lab_decide_notify_rows_of_designs()")


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("lab", "0009_designs")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False)]
