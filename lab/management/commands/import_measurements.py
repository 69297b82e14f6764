"""python manage.py import_measurements FILE.csv --product KEY [--user USERNAME]"""

from functools import partial
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from lab.errors import ApplicationError
from lab.services.measurement_import import (
    HEADER_HELP,
    import_product,
    measurements_csv_check,
    measurements_csv_write,
    open_csv,
)


class Command(BaseCommand):
    help = (
        f"Load measurements from a CSV file with the header {HEADER_HELP}. Every row is "
        "checked first; one bad row and nothing is written (the first bad lines are named). "
        "Then all rows are stored in one transaction: units are created as needed and an "
        "existing (metric, unit) gets the new value."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the CSV file")
        parser.add_argument("--product", required=True, help="the product's key")
        parser.add_argument(
            "--user", help="the product owner's username (needed when several users have it)"
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar on standard error"
        )

    def handle(self, *args, file: Path, product: str, user: str | None, **options):
        if not file.is_file():
            raise CommandError(f"{file}: no such file")
        # The bars are drawn on the raw stream (Django's wrapper would end every redraw with
        # a new line); they are off when standard error is not a terminal.
        bar = partial(
            tqdm,
            unit=" rows",
            file=getattr(self.stderr, "_out", self.stderr),
            disable=True if options["no_progress"] else None,
        )
        try:
            target = import_product(key=product, username=user)
            with open_csv(file) as rows, bar(desc="checking") as checking:
                checked = measurements_csv_check(
                    product=target, file=rows, progress=checking.update
                )
            with open_csv(file) as rows, bar(desc="writing", total=checked.rows) as writing:
                result = measurements_csv_write(
                    product=target, file=rows, checked=checked, progress=writing.update
                )
        except ApplicationError as exc:
            detail = exc.detail if isinstance(exc.detail, list) else [exc.detail]
            raise CommandError(
                "\n".join([f"{file}: nothing was imported", *map(str, detail)])
            ) from exc
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from exc
        self.stdout.write(
            f"Imported {result.created + result.updated:,} measurements into product "
            f"{target.key!r}: {result.created:,} created, {result.updated:,} updated."
        )
