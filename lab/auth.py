"""Bearer authentication for the admin API: the token's user is the tenant."""

from ninja.security import HttpBearer

from lab.services.credentials import API_TOKEN_KIND, api_token_user, split_prefix


class ApiTokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        user = api_token_user(token)
        if user is not None:
            # The signed plot links name the token they were made with (lab.analysis.links).
            request.api_token_prefix = split_prefix(token, API_TOKEN_KIND)
        return user
