from django.db.models import QuerySet, prefetch_related_objects

from lab.errors import NotFound
from lab.models import Experiment, Product, Status, Variant
from lab.selectors.common import visible
from rules.keys import is_valid_key


def experiment_list(*, product: Product, status: str | None = None) -> QuerySet[Experiment]:
    return (
        visible(Experiment.objects.filter(product=product), status)
        .select_related("step", "layer")
        .prefetch_related("variants")
        .order_by("id")
    )


def experiment_get(*, product: Product, key: str) -> Experiment:
    experiment = (
        Experiment.objects.select_related("step", "layer").filter(product=product, key=key).first()
        if is_valid_key(key)
        else None
    )
    if experiment is None:
        raise NotFound(f"no experiment {key!r} in product {product.key!r}")
    experiment.product = product
    return experiment


def experiment_live_variants(experiment: Experiment) -> list[Variant]:
    """The variants that are not removed, in creation order (the bucketing order).

    Uses the prefetched variants when the experiment was listed; fetches them once otherwise.
    """
    prefetch_related_objects([experiment], "variants")
    return [v for v in experiment.variants.all() if v.status != Status.REMOVED]


def experiment_control(experiment: Experiment) -> Variant | None:
    """The variant treatment is compared against.

    The variant marked `is_control` unless it is removed; otherwise the oldest variant
    that is not removed; None when every variant is removed (or there is none).
    A disabled control stays the control: its units keep it and their data still count.
    """
    live = experiment_live_variants(experiment)
    marked = [v for v in live if v.is_control]
    if marked:
        return marked[0]
    return live[0] if live else None
