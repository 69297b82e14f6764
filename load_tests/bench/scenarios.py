"""What each scenario sends, and the settings its load generators read from the environment
(load_tests/wrk/common.lua, load_tests/openloop.py).

Known-unit decide comes in three traffic shapes:

- `warm`: random units among the few thousand the main phase warms up on, every one of them
  repeated all the time: every worker ends up holding every unit (the memory's best case);
- `cold`: random units among `--cold-units` (200,000) other seeded units: a unit's decision
  is mostly its first repeat in the run, held by no worker's memory;
- `line`: a production line: units arrive (the first decision stores their assignments),
  are decided 3-5 times in all within `--line-window` seconds, then never again; the
  repeats go to whichever worker takes them (load_tests/wrk/decide_line.lua). A real line
  spreads them over minutes at a far lower rate; what the workers see is the same sequence
  (a first decision, repeats by any worker, never again), compressed to the run's length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from load_tests.bench.database import Seeded


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    script: str
    units_per_request: int = 1
    # The request one warm-up call checks before measuring.
    probe_path: str = "/api/v1/decide"
    # A known-unit shape: its share of decisions answered from memory is reported.
    known_shape: bool = False
    # Measured in the memory's steady state: before each run, in every round, the servers
    # are loaded with it until WARM_HIT_RATIO of it is answered from memory (the shapes run
    # in between push its units out of the workers' bounded memory).
    filled: bool = False


@dataclass(frozen=True)
class Shapes:
    """Where the traffic shapes draw their units from."""

    cold_offset: int = 0  # the first seeded unit number of the cold shape
    cold_units: int = 0  # how many (0: the cold shape is not measured)
    line_window: int = 3  # seconds over which one unit's decisions spread
    line_min: int = 3
    line_max: int = 5


PEER_LABEL = "unleash"
PEER_SCENARIO = Scenario(
    "unleash", "Unleash, GET /api/frontend?userId=", "unleash_frontend.lua", probe_path=""
)

SCENARIOS = {
    "floor": Scenario(
        "floor", "front floor (constant answer, no Lab code)", "floor.lua",
        probe_path="/bench/floor",
    ),
    "floor_read": Scenario(
        "floor_read", "front floor with one database round trip (no Lab code)",
        "floor_read.lua", probe_path="/bench/floor-read",
    ),
    "noop": Scenario("noop", "no-op ceiling", "noop.lua", probe_path="/bench/noop"),
    "warm": Scenario(
        "warm", "decide, known unit: warm (every unit repeated)", "decide_known.lua",
        known_shape=True, filled=True,
    ),
    "cold": Scenario(
        "cold", "decide, known unit: cold memory (first repeat)", "decide_known.lua",
        known_shape=True,
    ),
    "line": Scenario(
        "line", "decide, production line (3–5 times, then never)", "decide_line.lua",
        known_shape=True,
    ),
    "new": Scenario("new", "decide, new unit", "decide_new.lua"),
    "batch": Scenario(
        "batch", "batch of 1000, new units", "batch_new.lua", 1000, "/api/v1/decide/batch"
    ),
    "ofrep": Scenario(
        "ofrep", "OFREP, one flag", "ofrep.lua", probe_path="/ofrep/v1/evaluate",
        known_shape=True, filled=True,
    ),
}  # fmt: skip
# Names of earlier runs' commands (RESULTS.md): `known` was the warm shape.
ALIASES = {"known": "warm"}


def resolve(name: str) -> str:
    return ALIASES.get(name, name)


def lab_env(
    seeded: Seeded, nonce: str, scenario: Scenario | None = None, shapes: Shapes | None = None
) -> dict[str, str]:
    shapes = shapes or Shapes()
    env = {
        **os.environ,
        "LAB_CLIENT_KEY": seeded.client_key,
        "LAB_KNOWN_UNITS": str(seeded.warm_units or seeded.known_units),
        "LAB_KNOWN_OFFSET": "0",
        "LAB_UNIT_PREFIX": seeded.unit_prefix,
        "LAB_UNIT_DIGITS": str(seeded.unit_digits),
        "LAB_RUN_NONCE": nonce,
        "LAB_BATCH_SIZE": "1000",
        "LAB_OFREP_FLAG": next(iter(seeded.experiments)),
        "LAB_LINE_WINDOW": str(shapes.line_window),
        "LAB_LINE_MIN": str(shapes.line_min),
        "LAB_LINE_MAX": str(shapes.line_max),
    }
    if scenario is not None and scenario.name == "cold":
        if not shapes.cold_units:
            raise RuntimeError("the cold shape needs seeded cold units (--cold-units)")
        env["LAB_KNOWN_OFFSET"] = str(shapes.cold_offset)
        env["LAB_KNOWN_UNITS"] = str(shapes.cold_units)
    return env
