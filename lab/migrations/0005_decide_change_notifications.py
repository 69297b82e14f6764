"""Notify decide's workers of every write that can change a known unit's answer.

PostgreSQL only (on SQLite nothing is created: decide.known is off there). Each trigger
sends a notification on channel `lab_decide`, delivered when its transaction commits:

- `*` (forget everything) after any statement that changes a client key, a product, a step,
  an experiment, a variant or a layer, and after a TRUNCATE of units or assignments;
- `u:<id>[,<id>...]` (forget these units) when a unit's key or attributes change or a unit
  is deleted, when an assignment is updated or deleted (one notification per statement,
  or `*` beyond 200 units), and when an assignment is inserted by anything but decide's own
  first decisions (source `hash`: those change no answer that decide.known serves, see its
  rule 3). Decide's insert path therefore pays only the WHEN test of one row trigger.

See decide/known.py and docs/decide.md, "Known units in memory".
"""

from django.db import migrations

CHANNEL = "lab_decide"
MAX_UNITS_PER_NOTIFICATION = 200
# Reason.HASH, the source decide's first decisions store (rules/vocabulary.py).
DECIDE_SOURCE = "hash"
# Tables whose every change forgets everything.
CONFIG_TABLES = (
    "lab_clientkey",
    "lab_product",
    "lab_step",
    "lab_experiment",
    "lab_variant",
    "lab_layer",
)

FORWARD = [
    f"""
    CREATE FUNCTION lab_decide_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANNEL}', '*');
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION lab_decide_notify_unit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('{CHANNEL}', 'u:' || OLD.id);
        ELSE
            PERFORM pg_notify('{CHANNEL}', 'u:' || NEW.id);
        END IF;
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION lab_decide_notify_assignment_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{CHANNEL}', 'u:' || NEW.unit_id);
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE FUNCTION lab_decide_notify_assignments_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        units bigint;
        payload text;
    BEGIN
        SELECT count(*) INTO units
        FROM (SELECT DISTINCT unit_id FROM changed LIMIT {MAX_UNITS_PER_NOTIFICATION + 1}) d;
        IF units = 0 THEN
            RETURN NULL;
        ELSIF units > {MAX_UNITS_PER_NOTIFICATION} THEN
            PERFORM pg_notify('{CHANNEL}', '*');
        ELSE
            SELECT 'u:' || string_agg(DISTINCT unit_id::text, ',') INTO payload FROM changed;
            PERFORM pg_notify('{CHANNEL}', payload);
        END IF;
        RETURN NULL;
    END $$
    """,
    *(
        f"""
        CREATE TRIGGER {table}_decide_notify
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_all()
        """
        for table in CONFIG_TABLES
    ),
    """
    CREATE TRIGGER lab_unit_decide_notify_changed
    AFTER UPDATE ON lab_unit FOR EACH ROW
    WHEN (OLD.key IS DISTINCT FROM NEW.key OR OLD.attributes IS DISTINCT FROM NEW.attributes)
    EXECUTE FUNCTION lab_decide_notify_unit()
    """,
    """
    CREATE TRIGGER lab_unit_decide_notify_deleted
    AFTER DELETE ON lab_unit FOR EACH ROW EXECUTE FUNCTION lab_decide_notify_unit()
    """,
    """
    CREATE TRIGGER lab_unit_decide_notify_truncated
    AFTER TRUNCATE ON lab_unit FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_all()
    """,
    f"""
    CREATE TRIGGER lab_assignment_decide_notify_inserted
    AFTER INSERT ON lab_assignment FOR EACH ROW
    WHEN (NEW.source <> '{DECIDE_SOURCE}')
    EXECUTE FUNCTION lab_decide_notify_assignment_inserted()
    """,
    """
    CREATE TRIGGER lab_assignment_decide_notify_updated
    AFTER UPDATE ON lab_assignment REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_assignments_changed()
    """,
    """
    CREATE TRIGGER lab_assignment_decide_notify_deleted
    AFTER DELETE ON lab_assignment REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_assignments_changed()
    """,
    """
    CREATE TRIGGER lab_assignment_decide_notify_truncated
    AFTER TRUNCATE ON lab_assignment FOR EACH STATEMENT
    EXECUTE FUNCTION lab_decide_notify_all()
    """,
]

BACKWARD = [
    *(f"DROP TRIGGER {table}_decide_notify ON {table}" for table in CONFIG_TABLES),
    "DROP TRIGGER lab_unit_decide_notify_changed ON lab_unit",
    "DROP TRIGGER lab_unit_decide_notify_deleted ON lab_unit",
    "DROP TRIGGER lab_unit_decide_notify_truncated ON lab_unit",
    "DROP TRIGGER lab_assignment_decide_notify_inserted ON lab_assignment",
    "DROP TRIGGER lab_assignment_decide_notify_updated ON lab_assignment",
    "DROP TRIGGER lab_assignment_decide_notify_deleted ON lab_assignment",
    "DROP TRIGGER lab_assignment_decide_notify_truncated ON lab_assignment",
    "DROP FUNCTION lab_decide_notify_all()",
    "DROP FUNCTION lab_decide_notify_unit()",
    "DROP FUNCTION lab_decide_notify_assignment_inserted()",
    "DROP FUNCTION lab_decide_notify_assignments_changed()",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("lab", "0004_targeting")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False)]
