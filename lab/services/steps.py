"""Steps: the ordered stages of a product's process, referenced by experiments and metrics."""

from django.db import transaction
from django.db.models import Max

from lab.errors import BadRequest
from lab.models import Product, Status, Step
from lab.services.common import apply_changes, conflict_on_duplicate

POSITION_MAX = 2**31 - 1  # the column is a 32-bit integer on every backend


def step_create(*, product: Product, key: str, name: str = "", position: int | None = None) -> Step:
    """Create a step; without a position it goes after the last step of the process."""
    if position is None:
        last = Step.objects.filter(product=product).aggregate(last=Max("position"))["last"]
        position = 0 if last is None else min(last + 1, POSITION_MAX)
    _check_position(position)
    with conflict_on_duplicate(
        f"a step with key {key!r} exists already in product {product.key!r}"
    ):
        return Step.objects.create(product=product, key=key, name=name or key, position=position)


@transaction.atomic
def step_update(*, step: Step, actor: str, changes: dict) -> Step:
    if "position" in changes:
        _check_position(changes["position"])
    apply_changes(
        obj=step,
        changes=changes,
        product=step.product,
        actor=actor,
        object_type="step",
        object_key=step.key,
    )
    # A step's status is bookkeeping (hidden from lists, not newly referenced): experiments
    # keep their step and decide filters by the step's immutable key, so nothing to bump.
    return step


def step_remove(*, step: Step, actor: str) -> Step:
    return step_update(step=step, actor=actor, changes={"status": Status.REMOVED})


def step_for_reference(*, product: Product, key: str | None, current: Step | None = None):
    """The step an experiment or a metric names by key (None for no step).

    An unknown or removed step is bad input; a removed step that the object already
    references is kept, so an unrelated PATCH of that object still succeeds.
    """
    if key is None:
        return None
    if current is not None and current.key == key:
        return current
    step = Step.objects.filter(product=product, key=key).first()
    if step is None:
        raise BadRequest(f"no step {key!r} in product {product.key!r}")
    if step.status == Status.REMOVED:
        raise BadRequest(f"step {key!r} is removed; restore it or choose another step")
    return step


def _check_position(position: int) -> None:
    if isinstance(position, bool) or not isinstance(position, int):
        raise BadRequest("position must be an integer")
    if not 0 <= position <= POSITION_MAX:
        raise BadRequest(f"position must be between 0 and {POSITION_MAX}")
