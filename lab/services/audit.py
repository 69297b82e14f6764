from lab.models import AuditEvent, Product


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
