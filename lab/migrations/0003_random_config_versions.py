"""Config versions become random 63-bit values (docs/decide.md, "The config cache").

Every existing product gets a fresh random version, so no (product id, version) that a
counter reached in this database can meet the same pair written by another database.
"""

import secrets

from django.db import migrations, models

import lab.models


def randomize_versions(apps, schema_editor):
    Product = apps.get_model("lab", "Product")
    for product_id in Product.objects.values_list("id", flat=True).iterator():
        Product.objects.filter(id=product_id).update(config_version=secrets.randbits(63))


class Migration(migrations.Migration):
    dependencies = [("lab", "0001_initial")]

    operations = [
        migrations.AlterField(
            model_name="product",
            name="config_version",
            field=models.BigIntegerField(default=lab.models.new_config_version, editable=False),
        ),
        migrations.RunPython(randomize_versions, migrations.RunPython.noop),
    ]
