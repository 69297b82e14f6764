"""`python load_tests/bench.py ...` runs `python -m load_tests.bench ...`, the decide benchmark
(the package load_tests/bench/; load_tests/README.md). Kept because RESULTS.md cites it."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is load_tests/: the package must be found from the root.
sys.path[:1] = [str(ROOT)]

from load_tests.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
