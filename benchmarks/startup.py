"""Cold start of the light commands beside the floor they are built on, measured interleaved in one run.

    python benchmarks/startup.py [--runs 15]

Compares, in alternating order so machine noise hits every case alike:
  vitcli tokens --size 384 --patch 16, vitcli cost --variant B/16, vitcli --help
                                            (as `python -m vitcli ...`, same interpreter)
  python -c "import typer, rich.console"    (the least any Typer + rich CLI must import: the floor)
  python -c "import torch"                  (what vitcli avoids for light commands)
Reports the median wall time of each and each vitcli case over the floor. The goal: <= 1.5x.

Bytecode is allowed (PYTHONDONTWRITEBYTECODE is cleared for the runs, and a first untimed round writes the
.pyc files), as in any installed package; with it disabled every start would recompile vitcli's modules.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

FLOOR = "import typer, rich.console"
CASES = {
    "vitcli tokens": [sys.executable, "-m", "vitcli", "tokens", "--size", "384", "--patch", "16"],
    "vitcli cost": [sys.executable, "-m", "vitcli", "cost", "--variant", "B/16"],
    "vitcli --help": [sys.executable, "-m", "vitcli", "--help"],
    FLOOR: [sys.executable, "-c", "import typer, rich.console"],
    "import torch": [sys.executable, "-c", "import torch"],
}
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for cmd in CASES.values():  # warm the file cache once
        wall(cmd)
    times = {k: [] for k in CASES}
    for _ in range(args.runs):
        for k, cmd in CASES.items():
            times[k].append(wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    over = {k: med[k] / med[FLOOR] for k in CASES if k.startswith("vitcli")}
    result = {"runs": args.runs, "median_s": med, "over_typer_rich": over,
              "torch_over_vitcli_tokens": med["import torch"] / med["vitcli tokens"], "goal": "each <= 1.5x"}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for k, v in med.items():
        print(f"{k:32s} median {v * 1000:7.1f} ms" + (f"   {over[k]:.2f}x the floor" if k in over else ""))
    print(f"goal: each vitcli case <= 1.5x `{FLOOR}`; import torch is {result['torch_over_vitcli_tokens']:.1f}x "
          "vitcli tokens")


if __name__ == "__main__":
    main()
