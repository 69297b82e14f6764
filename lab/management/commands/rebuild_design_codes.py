from django.core.management.base import BaseCommand
from django.db import connection

from lab.services.designs import design_codes_rebuild


class Command(BaseCommand):
    help = (
        "Write every design's unit level codes again from the stored assignments (PostgreSQL; "
        "docs/designs.md, 'Analysis'), for assignment writes the triggers did not see."
    )

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            self.stdout.write("Nothing to rebuild: on SQLite the analysis reads the assignments.")
            return
        designs, written = design_codes_rebuild()
        self.stdout.write(f"Rebuilt the level codes of {written} units in {designs} designs.")
