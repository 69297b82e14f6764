"""The caller's own admin API tokens: list them, revoke one (for example a leaked one)."""

from datetime import datetime

from ninja import Path, Router, Schema, Status
from ninja.pagination import paginate

from admin_api.pagination import Pagination
from lab.selectors.credentials import api_token_list
from lab.services import credentials

router = Router(tags=["api tokens"])


class ApiTokenOut(Schema):
    prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


@router.get("", response=list[ApiTokenOut], summary="List your API tokens (never their secrets)")
@paginate(Pagination)
def list_api_tokens(request):
    return api_token_list(user=request.auth)


@router.delete("/{prefix}", response={204: None}, summary="Revoke one of your API tokens")
def revoke_api_token(request, prefix: Path[str]):
    credentials.api_token_revoke(user=request.auth, prefix=prefix)
    return Status(204, None)
