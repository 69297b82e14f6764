from django.db.models import QuerySet

from lab.errors import NotFound
from lab.models import Assignment, Experiment


def assignment_list(*, experiment: Experiment, variant: str | None = None) -> QuerySet[Assignment]:
    assignments = Assignment.objects.filter(experiment=experiment)
    if variant is not None:
        assignments = assignments.filter(variant__key=variant)
    return assignments.select_related("unit", "variant").order_by("id")


def assignment_get(*, experiment: Experiment, unit: str) -> Assignment:
    assignment = (
        Assignment.objects.select_related("unit", "variant")
        .filter(experiment=experiment, unit__product_id=experiment.product_id, unit__key=unit)
        .first()
    )
    if assignment is None:
        raise NotFound(f"unit {unit!r} has no assignment in experiment {experiment.key!r}")
    return assignment
