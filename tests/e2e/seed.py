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


def product_state(*, product: str) -> dict:
    from lab.models import Product

    row = Product.objects.get(key=product)
    return {"id": row.id, "config_version": row.config_version}


def expected(*, product: str, experiment: str, units: list[str]) -> dict:
    """The variant the bucketing contract gives each unit in this database now (ignoring
    stored assignments)."""
    from lab.models import Experiment
    from rules.bucketing import bucket_position, choose, compile_ranges

    row = Experiment.objects.get(product__key=product, key=experiment)
    eligible = [
        (v.id, v.key, v.weight)
        for v in row.variants.order_by("id")
        if v.status == "enabled" and v.weight > 0
    ]
    ranges = compile_ranges(eligible, row.coverage)
    variants = {}
    for unit in units:
        chosen = choose(ranges, bucket_position(row.salt, unit))
        variants[unit] = chosen.key if chosen else None
    return {"variants": variants}


def set_variant_weight(*, product: str, experiment: str, variant: str, weight: float) -> dict:
    from lab.models import Variant
    from lab.services.variants import variant_update

    row = Variant.objects.get(
        experiment__product__key=product, experiment__key=experiment, key=variant
    )
    variant_update(variant=row, actor="e2e", changes={"weight": weight})
    return {"weight": weight}


ACTIONS = {
    f.__name__: f
    for f in (
        seed,
        set_experiment_status,
        assignments,
        product_state,
        expected,
        set_variant_weight,
        has_field,
    )
}

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    action, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(ACTIONS[action](**arguments)))
