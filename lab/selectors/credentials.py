from django.db.models import QuerySet

from lab.models import ApiToken


def api_token_list(*, user) -> QuerySet[ApiToken]:
    """The user's admin API tokens, revoked ones included, oldest first."""
    return ApiToken.objects.filter(user=user).order_by("id")
