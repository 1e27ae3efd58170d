"""Memory stays bounded as the number of rows grows: the output is written with positioned writes (not a
memory map that keeps every written page resident), and decoding holds a few pieces at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import make_local_dir

PEAK = """
import atexit, re, sys
def peak():
    kib = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    sys.stderr.write(f"PEAK={kib * 1024}\\n")
atexit.register(peak)
sys.argv = ["vitcli", *sys.argv[1:]]
from vitcli.cli import main
main()
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the peak from Linux's /proc")
def test_peak_memory_stays_flat_as_rows_grow(tmp_path):
    wide = make_local_dir(tmp_path / "wide", img_size=64, patch_size=8, embed_dim=256, depth=1, num_heads=4,
                          num_classes=0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(folder / "0000.png")
    data = (folder / "0000.png").read_bytes()
    for i in range(1, 2000):
        (folder / f"{i:04d}.png").write_bytes(data)

    def peak(n: int) -> int:
        listing = tmp_path / f"list{n}.txt"
        listing.write_text("".join(f"{folder / f'{i:04d}.png'}\n" for i in range(n)))
        out = tmp_path / f"f{n}.npy"
        p = subprocess.run([sys.executable, "-c", PEAK, "features", "--from-list", str(listing), "--model",
                            f"local-dir:{wide}", "--mode", "all", "--device", "cpu", "--batch-size", "50", "-o",
                            str(out), "--json"], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["shape"] == [n, 65, 256]
        return int(p.stderr.strip().splitlines()[-1].removeprefix("PEAK="))

    small, large = peak(200), peak(2000)
    grown = (2000 - 200) * 65 * 256 * 4  # 120 MB more output
    assert large - small < grown / 4, (small, large)  # a memory map would add all of it
