"""The profile phase: py-spy samples every worker during a run of one scenario; the top
functions by own and inclusive time, and own time by layer (django, ninja, psycopg, ...)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from load_tests.bench.drivers import run_wrk
from load_tests.bench.run import ROOT
from load_tests.bench.scenarios import SCENARIOS
from load_tests.bench.servers import Server


def phase_profile(server: Server, seconds: float, args, out_dir: Path) -> dict:
    """py-spy on every worker during a known-unit run; the top functions by own and total time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    # Warm first: the first requests of a worker import the URLconf's modules.
    run_wrk(server, SCENARIOS[args.profile_scenario], args.warmup, args)
    native = ["--native"] if args.profile_native else ["--nonblocking"]
    profilers = []
    for pid in server.workers():
        output = out_dir / f"profile-{pid}.txt"
        profilers.append(
            (
                output,
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "200",
                        *native,
                        "--format",
                        "raw",
                        "--output",
                        str(output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        )
    time.sleep(0.5)
    load = run_wrk(server, SCENARIOS[args.profile_scenario], seconds, args)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    layers: dict[str, int] = {}
    samples = 0
    for output, profiler in profilers:
        profiler.wait(timeout=seconds + 30)
        if not output.exists():
            continue
        for line in output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_parse_frame(frame) for frame in stack.split(";")]
            samples += count
            leaf_name, leaf_layer = frames[-1]
            own[leaf_name] = own.get(leaf_name, 0) + count
            layers[leaf_layer] = layers.get(leaf_layer, 0) + count
            # Inclusive time, for the request's own code path: gunicorn's loop and the
            # interpreter's start-up frames enclose every sample and say nothing.
            for name in {name for name, layer in frames if layer not in ("gunicorn", "python")}:
                total[name] = total.get(name, 0) + count

    def top(table: dict[str, int], limit: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [(name, count / samples) for name, count in ranked]

    return {
        "scenario": args.profile_scenario,
        "samples": samples,
        "rps_while_profiled": load["rps"],
        "own": top(own, args.profile_top) if samples else [],
        "total": top(total, args.profile_top) if samples else [],
        "layers": top(layers, 20) if samples else [],
        "files": [str(output) for output, _ in profilers],
    }


def _parse_frame(frame: str) -> tuple[str, str]:
    """'function (path/to/module.py:123)' -> ('function (to/module.py)', layer).

    The layer is the top-level package the code belongs to (django, ninja, psycopg, ...,
    decide, lab), "python" for the standard library.
    """
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not match:
        return frame.strip(), "other"
    name, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    # py-spy names files relative to their sys.path entry ("django/db/utils.py",
    # "socket.py"); absolute paths only for what is outside it.
    if "site-packages" in parts:
        layer = parts[parts.index("site-packages") + 1]
    elif path.startswith(str(ROOT)):
        layer = Path(path).relative_to(ROOT).parts[0]
    elif len(parts) > 1 and not path.startswith(("/", "<")):
        layer = parts[0]
    else:
        layer = "python"
    layer = layer.split(".")[0]
    return f"{name} ({short})", layer
