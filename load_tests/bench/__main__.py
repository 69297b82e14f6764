"""`python -m load_tests.bench ...`: the benchmark's command (load_tests/README.md)."""

import sys

from load_tests.bench.cli import main

sys.exit(main())
