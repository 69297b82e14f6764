"""Drop the single-column foreign-key indexes that a composite unique index leads with.

They cost every write, and on a database that has not been analyzed yet the planner picked
them (product_id) over the selective composite index, filtering every unit of a product on
the decide hot path. See docs/operations.md, "Query plans".

The indexes are dropped by name (0001 created them with these names on every backend)
rather than by AlterField's database side, which on PostgreSQL re-creates each foreign key
(a validation scan of the whole table) and would also drop the partial unique index
variant_one_control_per_experiment, which is an index on the same column.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lab", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
        migrations.AlterField(
            model_name="assignment",
            name="experiment",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="assignments",
                to="lab.experiment",
            ),
        ),
        migrations.AlterField(
            model_name="assignment",
            name="unit",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="assignments",
                to="lab.unit",
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="product",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="audit_events",
                to="lab.product",
            ),
        ),
        migrations.AlterField(
            model_name="experiment",
            name="product",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="experiments",
                to="lab.product",
            ),
        ),
        migrations.AlterField(
            model_name="measurement",
            name="metric",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="measurements",
                to="lab.metric",
            ),
        ),
        migrations.AlterField(
            model_name="measurement",
            name="unit",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="measurements",
                to="lab.unit",
            ),
        ),
        migrations.AlterField(
            model_name="metric",
            name="product",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="metrics",
                to="lab.product",
            ),
        ),
        migrations.AlterField(
            model_name="product",
            name="user",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="step",
            name="product",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="steps",
                to="lab.product",
            ),
        ),
        migrations.AlterField(
            model_name="unit",
            name="product",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="units",
                to="lab.product",
            ),
        ),
        migrations.AlterField(
            model_name="variant",
            name="experiment",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="variants",
                to="lab.experiment",
            ),
        ),
                ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_assignment_experiment_id_39c73864"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_assignment_unit_id_efd262a2"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_auditevent_product_id_ea736e2c"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_experiment_product_id_d4764a74"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_measurement_metric_id_413db785"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_measurement_unit_id_31ed910e"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_metric_product_id_702a08e4"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_product_user_id_0ce5a42b"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_step_product_id_0f8d93e1"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_unit_product_id_db4f1ecf"', reverse_sql=migrations.RunSQL.noop
                ),
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "lab_variant_experiment_id_cc1863e0"', reverse_sql=migrations.RunSQL.noop
                ),
            ],
        ),
    ]
