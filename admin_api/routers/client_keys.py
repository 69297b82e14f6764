from datetime import datetime

from ninja import Path, Router, Schema, Status
from ninja.pagination import paginate

from admin_api.pagination import Pagination
from lab.schema_types import InputSchema, Name
from lab.selectors import products as selectors
from lab.services import credentials

router = Router(tags=["client keys"])


class ClientKeyIn(InputSchema):
    name: Name = ""


class ClientKeyOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ClientKeyCreated(ClientKeyOut):
    secret: str


@router.get("", response=list[ClientKeyOut])
@paginate(Pagination)
def list_client_keys(request, product: Path[str]):
    product_obj = selectors.product_get(user=request.auth, key=product)
    return selectors.client_key_list(product=product_obj)


@router.post(
    "", response={201: ClientKeyCreated}, summary="Create a client key (secret shown once)"
)
def create_client_key(request, product: Path[str], body: ClientKeyIn | None = None):
    product_obj = selectors.product_get(user=request.auth, key=product)
    issued = credentials.client_key_create(product=product_obj, name=body.name if body else "")
    key = issued.row
    return Status(
        201,
        {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "created_at": key.created_at,
            "revoked_at": key.revoked_at,
            "secret": issued.secret,
        },
    )


@router.delete("/{key_id}", response={204: None})
def revoke_client_key(request, product: Path[str], key_id: int):
    product_obj = selectors.product_get(user=request.auth, key=product)
    credentials.client_key_revoke(product=product_obj, key_id=key_id)
    return Status(204, None)
