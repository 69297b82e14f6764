"""Signed plot links (docs/results.md §13): the pictures of the JSON answers, opened in a
browser without the bearer token. The link is the credential (lab/analysis/links.py)."""

from ninja import Path, Router

from admin_api.routers.analysis import SVG, svg_response
from lab.analysis.links import plot_link_open

router = Router(tags=["analysis"])

LINK_ERRORS = {
    403: "The link was altered, signed by another server, or its API token is revoked",
    410: "The link expired (PLOT_LINK_MAX_AGE_SECONDS): ask for the JSON answer again",
}
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


@router.get(
    "/{link}",
    auth=None,
    url_name="open_plot",
    summary="The picture a signed link from a JSON answer names (SVG), no token needed",
    openapi_extra={
        "responses": {
            **SVG["responses"],
            **{
                status: {"description": description, "content": ERROR}
                for status, description in LINK_ERRORS.items()
            },
        }
    },
)
def open_plot(request, link: str = Path(..., max_length=2000)):
    user, plot = plot_link_open(link)
    response = svg_response(request, plot, user=user)
    # The link is a credential: keep it out of the Referer of anything the picture loads.
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, max-age=60"
    return response
