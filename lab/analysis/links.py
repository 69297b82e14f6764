"""Signed, expiring links to the plots (docs/results.md §13).

A JSON answer that has a picture carries a link a person can open in a browser, or put in an
``<img src>``, without the bearer token: the link itself is the credential. It is signed with
the server's SECRET_KEY (``django.core.signing``), names the API token it was made with and
the picture (product, experiment or design, metric, variant or experiments), and lasts
PLOT_LINK_MAX_AGE_SECONDS. Opening it checks the signature, the age and that the token is
still live, then draws the picture for the token's user as the authenticated endpoint would:
an altered link, an expired one, or one whose token was revoked gets a 4xx with a ``detail``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.conf import settings
from django.core import signing

from lab.errors import Forbidden, Gone
from lab.models import ApiToken

SALT = "lab.analysis.links.plot"


@dataclass(frozen=True)
class Plot:
    """What a link draws: ``kind`` is ``results``, ``control-chart``, ``factorial`` or
    ``effects``; ``target`` the experiment (or design) key where the kind has one."""

    kind: str
    product: str
    metric: str
    target: str | None = None
    variant: str | None = None
    experiments: tuple[str, ...] = ()


def plot_link_sign(*, token_prefix: str, plot: Plot) -> str:
    """The signed text of a link to ``plot`` (URL-safe: letters, digits, ``-_:``)."""
    payload = {key: value for key, value in asdict(plot).items() if value not in (None, ())}
    return signing.dumps({"token": token_prefix, **payload}, salt=SALT, compress=True)


def plot_link_open(signed: str):
    """The user the link was made for and the plot it draws."""
    max_age = settings.PLOT_LINK_MAX_AGE_SECONDS
    try:
        payload = signing.loads(signed, salt=SALT, max_age=max_age)
    except signing.SignatureExpired:
        raise Gone(
            f"this plot link expired (links last {max_age} s): ask for the JSON answer "
            "again to get a fresh one"
        ) from None
    except signing.BadSignature:
        raise Forbidden(
            "this plot link is not valid: it was altered, or signed by another server"
        ) from None
    token = (
        ApiToken.objects.select_related("user")
        .filter(prefix=payload.pop("token"), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        raise Forbidden("the API token this plot link was made with is revoked")
    payload["experiments"] = tuple(payload.get("experiments", ()))
    return token.user, Plot(**payload)
