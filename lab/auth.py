"""Bearer authentication for the admin API: the token's user is the tenant."""

from ninja.security import HttpBearer

from lab.services.credentials import api_token_user


class ApiTokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        return api_token_user(token)
