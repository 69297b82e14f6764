"""The audit trail: who changed what, when. Every service records its events through here."""

from collections.abc import Iterable
from typing import NamedTuple

from lab.models import AuditEvent, Product


class Change(NamedTuple):
    """One audited change of an object: its key and its value before and after."""

    object_key: str
    from_value: str = ""
    to_value: str = ""


def audit_record(
    *,
    product: Product,
    actor: str,
    action: str,
    object_type: str,
    object_key: str,
    from_value: str = "",
    to_value: str = "",
) -> AuditEvent:
    return AuditEvent.objects.create(
        product=product,
        actor=actor,
        action=action,
        object_type=object_type,
        object_key=object_key,
        from_value=from_value or "",
        to_value=to_value or "",
    )


def audit_records(
    *, product_id: int, actor: str, action: str, object_type: str, changes: Iterable[Change]
) -> int:
    """Record one event per change of the same kind, in one statement; how many."""
    events = [
        AuditEvent(
            product_id=product_id,
            actor=actor,
            action=action,
            object_type=object_type,
            object_key=change.object_key,
            from_value=change.from_value or "",
            to_value=change.to_value or "",
        )
        for change in changes
    ]
    if events:
        AuditEvent.objects.bulk_create(events)
    return len(events)
