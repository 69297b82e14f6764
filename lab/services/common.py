"""Helpers every write service uses: field updates with audited status changes, and
database errors turned into answers a client can act on."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction

from lab.errors import Conflict
from lab.models import AuditEvent, Product
from lab.services.audit import audit_record


@contextmanager
def conflict_on_duplicate(message: str) -> Iterator[None]:
    """Run a write in a savepoint; a unique-key violation becomes a 409 with `message`."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        raise Conflict(message) from exc


def apply_changes(
    *,
    obj,
    changes: dict,
    product: Product,
    actor: str,
    object_type: str,
    object_key: str,
) -> list[str]:
    """Set `changes` on `obj`, audit a status change, and return the fields that changed."""
    changed = [field for field, value in changes.items() if getattr(obj, field) != value]
    if "status" in changed:
        audit_record(
            product=product,
            actor=actor,
            action=AuditEvent.Action.STATUS_CHANGED,
            object_type=object_type,
            object_key=object_key,
            from_value=obj.status,
            to_value=changes["status"],
        )
    for field in changed:
        setattr(obj, field, changes[field])
    if changed:
        obj.full_clean(validate_unique=False)
        obj.save(update_fields=changed)
    return changed
