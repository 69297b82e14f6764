from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import Experiment, Variant
from lab.selectors.common import visible
from rules.keys import is_valid_key


def variant_list(*, experiment: Experiment, status: str | None = None) -> QuerySet[Variant]:
    """The experiment's variants in creation order, which is their bucketing order."""
    return visible(Variant.objects.filter(experiment=experiment), status).order_by("id")


def variant_get(*, experiment: Experiment, key: str) -> Variant:
    variant = (
        Variant.objects.filter(experiment=experiment, key=key).first()
        if is_valid_key(key)
        else None
    )
    if variant is None:
        raise NotFound(f"no variant {key!r} in experiment {experiment.key!r}")
    variant.experiment = experiment
    return variant
