from datetime import datetime

from ninja import Path, Query, Router, Schema, Status
from ninja.pagination import paginate
from pydantic import Field

from admin_api.pagination import Pagination
from admin_api.schemas import StatusFilter, StatusValue
from lab.schema_types import InputSchema, Key, Name
from lab.selectors import layers as selectors
from lab.selectors import products as product_selectors
from lab.services import layers as services

router = Router(tags=["layers"])


class LayerIn(InputSchema):
    key: Key
    name: Name = ""


class LayerPatch(InputSchema):
    name: Name = None
    status: StatusValue = None


class LayerMemberOut(Schema):
    key: str
    status: StatusValue
    layer_range: list[float]

    @staticmethod
    def resolve_layer_range(obj) -> list[float]:
        return [obj.layer_start, obj.layer_end]


class LayerOut(Schema):
    key: str
    name: str
    status: StatusValue
    salt: str = Field(description="Immutable; with a unit key it decides the unit's position.")
    created_at: datetime
    experiments: list[LayerMemberOut] = Field(
        description="The experiments in the layer (not removed), by start of their range."
    )

    @staticmethod
    def resolve_experiments(obj) -> list:
        return getattr(obj, "member_list", [])


@router.get("", response=list[LayerOut])
@paginate(Pagination)
def list_layers(request, product: Path[str], filters: Query[StatusFilter]):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.layer_list(product=product_obj, status=filters.status)


@router.post("", response={201: LayerOut})
def create_layer(request, product: Path[str], body: LayerIn):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    layer = services.layer_create(product=product_obj, **body.dict())
    return Status(201, selectors.layer_get(product=product_obj, key=layer.key))


@router.get("/{layer}", response=LayerOut)
def get_layer(request, product: Path[str], layer: Path[str]):
    return _layer(request, product, layer)


@router.patch("/{layer}", response=LayerOut)
def update_layer(request, product: Path[str], layer: Path[str], body: LayerPatch):
    return services.layer_update(
        layer=_layer(request, product, layer),
        actor=request.auth.username,
        changes=body.dict(exclude_unset=True),
    )


@router.delete("/{layer}", response=LayerOut)
def remove_layer(request, product: Path[str], layer: Path[str]):
    return services.layer_remove(layer=_layer(request, product, layer), actor=request.auth.username)


def _layer(request, product: str, layer: str):
    product_obj = product_selectors.product_get(user=request.auth, key=product)
    return selectors.layer_get(product=product_obj, key=layer)
