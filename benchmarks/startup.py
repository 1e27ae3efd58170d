"""Cold start of `vitcli tokens` beside the floor it is built on, measured interleaved in one run.

    python benchmarks/startup.py [--runs 20]

Compares, in alternating order so machine noise hits both alike:
  A: vitcli tokens --size 384 --patch 16    (as `python -m vitcli ...`, same interpreter)
  B: python -c "import typer, rich.console"  (the least any Typer + rich CLI must import)
  C: python -c "import torch"               (what vitcli avoids for light commands)
Reports the median wall time of each and the ratios A/B and C/A. The goal: A/B <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CASES = {
    "vitcli tokens": [sys.executable, "-m", "vitcli", "tokens", "--size", "384", "--patch", "16"],
    "import typer, rich.console": [sys.executable, "-c", "import typer, rich.console"],
    "import torch": [sys.executable, "-c", "import torch"],
}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for cmd in CASES.values():  # warm the file cache once
        wall(cmd)
    times = {k: [] for k in CASES}
    for _ in range(args.runs):
        for k, cmd in CASES.items():
            times[k].append(wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["vitcli tokens"] / med["import typer, rich.console"]
    result = {"runs": args.runs, "median_s": med, "vitcli_over_typer_rich": ratio,
              "torch_over_vitcli": med["import torch"] / med["vitcli tokens"], "goal": "vitcli_over_typer_rich <= 1.5"}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for k, v in med.items():
        print(f"{k:32s} median {v * 1000:7.1f} ms")
    print(f"vitcli tokens / import typer, rich.console = {ratio:.2f}x (goal <= 1.5x)")
    print(f"import torch / vitcli tokens             = {result['torch_over_vitcli']:.1f}x")


if __name__ == "__main__":
    main()
