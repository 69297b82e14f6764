from django.db.models import QuerySet

from lab.models import AuditEvent, Product


def audit_list(
    *,
    product: Product,
    object_type: str | None = None,
    object_key: str | None = None,
    action: str | None = None,
) -> QuerySet[AuditEvent]:
    """The product's audit trail, newest first."""
    events = AuditEvent.objects.filter(product=product)
    if object_type is not None:
        events = events.filter(object_type=object_type)
    if object_key is not None:
        events = events.filter(object_key=object_key)
    if action is not None:
        events = events.filter(action=action)
    return events.order_by("-id")
