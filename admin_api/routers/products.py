from datetime import datetime

from ninja import Query, Router, Schema, Status
from ninja.pagination import paginate

from admin_api.pagination import Pagination
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import InputSchema, Key, Name
from lab.selectors import products as selectors
from lab.services import products as services

router = Router(tags=["products"])


class ProductIn(InputSchema):
    key: Key
    name: Name = ""


class ProductPatch(InputSchema):
    name: Name | None = None
    status: StatusValue | None = None


class ProductOut(Schema):
    key: str
    name: str
    status: StatusValue
    created_at: datetime


@router.get("", response=list[ProductOut])
@paginate(Pagination)
def list_products(request, filters: Query[StatusFilter]):
    return selectors.product_list(user=request.auth, status=filters.status)


@router.post("", response={201: ProductOut})
def create_product(request, body: ProductIn):
    return Status(201, services.product_create(user=request.auth, key=body.key, name=body.name))


@router.get("/{product}", response=ProductOut)
def get_product(request, product: str):
    return selectors.product_get(user=request.auth, key=product)


@router.patch("/{product}", response=ProductOut)
def update_product(request, product: str, body: ProductPatch):
    return services.product_update(
        product=selectors.product_get(user=request.auth, key=product),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True, exclude_none=True),
    )


@router.delete("/{product}", response=ProductOut)
def remove_product(request, product: str):
    return services.product_remove(
        product=selectors.product_get(user=request.auth, key=product),
        actor=request.auth.username,
    )
