"""Layers: hash spaces that experiments share to be mutually exclusive (docs/decide.md,
"Layers"). A layer's salt is random and immutable; its name and status are bookkeeping.

The overlap rule (enabled experiments of one layer never overlap) is kept by
lab.services.experiments, which locks the layer row with `layer_lock` in every transaction
that puts an experiment into a layer, moves its range or enables it: two such writes on one
layer take turns, so neither can miss the other's range.
"""

from django.db import transaction

from lab.errors import Conflict, Unprocessable
from lab.models import Experiment, Layer, Product, Status
from lab.services.common import apply_changes, conflict_on_duplicate


def layer_create(*, product: Product, key: str, name: str = "") -> Layer:
    with conflict_on_duplicate(
        f"a layer with key {key!r} exists already in product {product.key!r}"
    ):
        return Layer.objects.create(product=product, key=key, name=name or key)


@transaction.atomic
def layer_update(*, layer: Layer, actor: str, changes: dict) -> Layer:
    changes = dict(changes)
    if changes.get("status") == Status.REMOVED and layer.status != Status.REMOVED:
        layer_lock(layer_id=layer.pk)
        members = list(
            Experiment.objects.filter(layer=layer)
            .exclude(status=Status.REMOVED)
            .order_by("id")
            .values_list("key", flat=True)[:5]
        )
        if members:
            raise Conflict(
                f"layer {layer.key!r} still holds experiment {members[0]!r}: move the "
                "experiments out of it (layer null) or remove them first"
            )
    # A layer's name and status do not change what decide answers: the experiments that
    # use it carry its salt, and a removed layer holds no experiment. Nothing to bump.
    apply_changes(
        obj=layer,
        changes=changes,
        product=layer.product,
        actor=actor,
        object_type="layer",
        object_key=layer.key,
    )
    return layer


def layer_remove(*, layer: Layer, actor: str) -> Layer:
    return layer_update(layer=layer, actor=actor, changes={"status": Status.REMOVED})


def layer_lock(*, layer_id: int) -> None:
    """Lock the layer row until the transaction ends (the overlap rule's mutex).

    FOR NO KEY UPDATE: it excludes the same lock taken by another write, but not the KEY
    SHARE lock an experiment row referencing the layer takes when it is written, so a
    transaction may write its experiment first and lock the layer after without deadlock.
    """
    Layer.objects.select_for_update(no_key=True).filter(pk=layer_id).values_list("pk").first()


def layer_for_reference(*, product: Product, key: str, current: Layer | None = None) -> Layer:
    """The layer an experiment names by key: an unknown or removed layer is bad input."""
    if current is not None and current.key == key:
        return current
    layer = Layer.objects.filter(product=product, key=key).first()
    if layer is None:
        raise Unprocessable(f"no layer {key!r} in product {product.key!r}")
    if layer.status == Status.REMOVED:
        raise Unprocessable(f"layer {key!r} is removed; restore it or choose another layer")
    return layer
