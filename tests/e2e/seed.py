"""Actions on the e2e server's database, run as `python seed.py ACTION JSON_ARGUMENTS`.

Prints one JSON object as its last line. Writes go through the same services as the admin
API where they exist, with the config version bumped in the same transaction.
"""

import json
import os
import sys


def seed(*, username: str, product: str, experiments: list[dict]) -> dict:
    from lab.models import Experiment, Variant
    from lab.services.config_version import product_config_changed
    from lab.services.credentials import api_token_create, client_key_create
    from lab.services.products import product_create

    token = api_token_create(username=username)
    product_obj = product_create(user=token.row.user, key=product)
    for spec in experiments:
        experiment = Experiment.objects.create(
            product=product_obj,
            key=spec["key"],
            coverage=spec.get("coverage", 1.0),
            status=spec.get("status", "enabled"),
            **spec.get("fields", {}),
        )
        for key, weight in spec["variants"]:
            Variant.objects.create(experiment=experiment, key=key, weight=weight)
    product_config_changed(product_obj)
    client_key = client_key_create(product=product_obj)
    return {"product": product, "client_key": client_key.secret, "api_token": token.secret}


def set_experiment_status(*, product: str, experiment: str, status: str) -> dict:
    from django.db import transaction

    from lab.models import Experiment, Product
    from lab.services.config_version import product_config_changed

    with transaction.atomic():
        product_obj = Product.objects.get(key=product)
        Experiment.objects.filter(product=product_obj, key=experiment).update(status=status)
        product_config_changed(product_obj)
    return {"status": status}


def assignments(*, product: str) -> dict:
    from lab.models import Assignment

    rows = Assignment.objects.filter(unit__product__key=product).values_list(
        "experiment__key", "unit__key", "variant__key", "source"
    )
    return {"assignments": [list(row) for row in rows]}


def has_field(*, model: str, field: str) -> dict:
    """Whether lab.models.<model> has <field> (for test data that needs a newer schema)."""
    from django.apps import apps

    names = {f.name for f in apps.get_model("lab", model)._meta.get_fields()}
    return {"has_field": field in names}


ACTIONS = {f.__name__: f for f in (seed, set_experiment_status, assignments, has_field)}

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lab.settings")
    import django

    django.setup()
    action, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(ACTIONS[action](**arguments)))
