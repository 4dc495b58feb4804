"""How fast the `dreamfarm` command answers: each command as a whole process
(interpreter start, imports, parsing, output), best and median of N runs.

    python bench/cli_speed.py                     # a table
    python bench/cli_speed.py --write docs/results/cli_speed_cpu.json

Targets (issue 13): `--help`, `render --help` and an argument error under 1 s,
`models` (the zoo's list) under 3 s. A benchmark, not a test: timings depend
on the machine and on what else runs on it, so nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (label, arguments, the exit status a correct CLI gives, target in seconds)
CASES: tuple[tuple[str, tuple[str, ...], int, float], ...] = (
    ("dreamfarm --help", ("--help",), 0, 1.0),
    ("dreamfarm render --help", ("render", "--help"), 0, 1.0),
    ("dreamfarm render --bogus", ("render", "--bogus"), 2, 1.0),
    ("dreamfarm models", ("models",), 0, 3.0),
)


def command() -> list[str]:
    """The installed console script next to this interpreter (what a user
    runs); `python -m cli.main` where it is not installed."""
    script = Path(sys.executable).parent / "dreamfarm"
    if script.exists():
        return [str(script)]
    found = shutil.which("dreamfarm")
    return [found] if found else [sys.executable, "-m", "cli.main"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_once(argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - t0, r.returncode


def measure(runs: int) -> list[dict[str, object]]:
    base = command()
    results: list[dict[str, object]] = []
    for label, args, expected_rc, target in CASES:
        times, codes = [], set()
        for _ in range(runs):
            seconds, rc = time_once([*base, *args])
            times.append(seconds)
            codes.add(rc)
        best = min(times)
        results.append({
            "command": label, "best_s": round(best, 3), "median_s": round(statistics.median(times), 3),
            "runs": runs, "target_s": target, "meets_target": best < target,
            "exit_status": sorted(codes), "expected_exit_status": expected_rc,
        })  # fmt: skip
    return results


def table(results: list[dict[str, object]]) -> str:
    lines = [f"{'command':28s} {'best':>7s} {'median':>7s} {'target':>7s}  ok  exit"]
    for r in results:
        ok = "yes" if r["meets_target"] else "NO"
        lines.append(f"{r['command']!s:28s} {r['best_s']:>6.2f}s {r['median_s']:>6.2f}s {r['target_s']:>6.1f}s  "
                     f"{ok:3s} {r['exit_status']}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per command (best and median are reported)")
    ap.add_argument("--write", type=Path, default=None, metavar="JSON", help="also write the results here")
    args = ap.parse_args()
    results = measure(args.runs)
    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    # What else ran: on a shared 2-core machine the load moves these figures more than any change does.
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"dreamfarm CLI start-up on {machine}, load average {load[0]} (best and median of {args.runs})")
    print(table(results))
    bad = [r["command"] for r in results if r["exit_status"] != [r["expected_exit_status"]]]
    if bad:
        print(f"unexpected exit status: {', '.join(map(str, bad))}", file=sys.stderr)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": machine, "load_average_1_5_15min": load, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d"), "results": results}  # fmt: skip
        args.write.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.write}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
