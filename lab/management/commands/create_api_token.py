from django.core.management.base import BaseCommand

from lab.services.credentials import api_token_create


class Command(BaseCommand):
    help = "Create USERNAME if needed and print a new admin API token as the last line."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args, username: str, name: str, **options):
        issued = api_token_create(username=username, name=name)
        self.stderr.write(f"Created an API token for {username!r}; it is shown only once.")
        self.stdout.write(issued.secret)
