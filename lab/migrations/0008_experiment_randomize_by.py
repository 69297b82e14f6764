from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lab", "0007_decide_notifications_per_product"),
    ]

    operations = [
        migrations.AddField(
            model_name="experiment",
            name="randomize_by",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("status_changed", "Status Changed"),
                    ("rebucketed", "Rebucketed"),
                    ("forced", "Forced"),
                    ("conditions_changed", "Conditions Changed"),
                    ("schedule_changed", "Schedule Changed"),
                    ("layer_changed", "Layer Changed"),
                    ("randomize_by_changed", "Randomize By Changed"),
                ],
                max_length=32,
            ),
        ),
    ]
