from typing import Annotated, Literal

from ninja import Path, Query, Router, Schema
from ninja.pagination import paginate
from pydantic import Field

from admin_api.pagination import Pagination
from admin_api.schemas import AuditEventOut
from lab.schema_types import Key, Text
from lab.selectors import audit as selectors
from lab.selectors.products import product_get

router = Router(tags=["audit"])

# AuditEvent.Action
ActionValue = Literal["status_changed", "forced", "rebucketed"]


class AuditFilter(Schema):
    object_type: Key | None = None
    object_key: Annotated[Text, Field(max_length=400)] | None = None
    action: ActionValue | None = None


@router.get(
    "",
    response=list[AuditEventOut],
    summary="The audit trail, newest first: status changes, forced assignments, re-bucketings",
)
@paginate(Pagination)
def list_audit_events(request, product: Path[str], filters: Query[AuditFilter]):
    return selectors.audit_list(
        product=product_get(user=request.auth, key=product),
        object_type=filters.object_type,
        object_key=filters.object_key,
        action=filters.action,
    )
