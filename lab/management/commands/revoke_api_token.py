from django.core.management.base import BaseCommand, CommandError

from lab.services.credentials import api_tokens_revoke
from rules.credentials import API_TOKEN_KIND, split_prefix


class Command(BaseCommand):
    help = (
        "Revoke an admin API token by its prefix (the part after 'lab_', or the whole token), "
        "or every token of a user with --user. The next request with it answers 401."
    )

    def add_arguments(self, parser):
        parser.add_argument("prefix", nargs="?", help="the token's prefix, or the whole token")
        parser.add_argument("--user", help="revoke every live token of this user")

    def handle(self, *args, prefix: str | None, user: str | None, **options):
        if (prefix is None) == (user is None):
            raise CommandError("give a token prefix or --user USERNAME (one of the two)")
        if prefix is not None:
            prefix = split_prefix(prefix, API_TOKEN_KIND) or prefix
        revoked = api_tokens_revoke(prefix=prefix, username=user)
        if not revoked:
            what = f"token {prefix!r}" if prefix else f"token of user {user!r}"
            raise CommandError(f"no live {what}")
        for token in revoked:
            self.stdout.write(f"revoked token {token.prefix} of user {token.user.username!r}")
