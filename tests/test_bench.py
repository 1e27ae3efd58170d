"""`vitcli bench` on CPU with tiny models: fields, the exact FLOP count, JSON schema, batch fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA

KEYS = {"model", "image_size", "batch_size", "dtype", "device", "img_per_s", "ms_per_batch", "flops_per_image",
        "tflops", "mfu", "peak_memory_bytes"}


def test_fields_and_exact_flops(cli, tiny_dir):
    name = f"local-dir:{tiny_dir}"
    r = cli("bench", "--model", name, "-b", "1", "-b", "4", "--warmup", "1", "--iters", "3", "--device", "cpu",
            "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()
    assert [row["batch_size"] for row in rows] == [1, 4]
    exact = cli("cost", "--model", name, "--json").json()[0]["flops"]
    for row in rows:
        assert KEYS <= set(row)
        assert row["flops_per_image"] == exact and row["flops_source"].startswith("analytic")
        assert row["image_size"] == [32, 32] and row["device"] == "cpu" and row["dtype"] == "float32"
        assert row["img_per_s"] == pytest.approx(row["batch_size"] / (row["ms_per_batch"] / 1e3))
        assert row["tflops"] == pytest.approx(exact * row["img_per_s"] / 1e12)
        assert row["mfu"] == pytest.approx(row["tflops"] / row["peak_tflops"])
        assert row["ms_per_batch_p10"] <= row["ms_per_batch"] <= row["ms_per_batch_p90"]
        assert row["peak_memory_bytes"] > 0 and row["iterations"] == 3


def test_given_peak_and_end_to_end(cli, tiny_dir):
    rows = cli("bench", "--model", f"local-dir:{tiny_dir}", "-b", "6", "--iters", "2", "--warmup", "0", "--peak",
               "2.5", "--end-to-end", DATA, "--device", "cpu", "--json").json()
    row = rows[0]
    assert row["end_to_end"] is True and row["batch_size"] == 6  # 4 images, cycled to fill the batch
    assert row["peak_tflops"] == 2.5 and row["peak_source"] == "given (--peak)"
    assert row["mfu"] == pytest.approx(row["tflops"] / 2.5)


def test_usage_errors(cli):
    for args, words in [([], "--model"), (["--model", "vit_tiny_patch16_224", "-b", "0"], "--batch-size"),
                        (["--model", "vit_tiny_patch16_224", "--peak", "-1"], "--peak")]:
        r = cli("bench", *args)
        assert r.exit_code == 2 and words in r.stderr


PROBE = """
import resource, sys
import vitcli.backend.bench  # torch and timm loaded: now cap the address space 1.5 GiB above what is mapped
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**29, vm + 3 * 2**29))
sys.argv = ["vitcli", *sys.argv[1:]]
from vitcli.cli import main
main()
"""


def test_batch_fallback_on_real_out_of_memory(tiny_dir):
    """Under a real memory cap, a batch that cannot be allocated is halved until it fits, and said so."""
    p = subprocess.run([sys.executable, "-c", PROBE, "bench", "--model", f"local-dir:{tiny_dir}", "-b", str(2**21),
                        "--warmup", "0", "--iters", "1", "--device", "cpu", "--peak", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads(p.stdout)[0]
    assert row["requested_batch_size"] == 2**21 and 1 <= row["batch_size"] < 2**21
    assert row["notes"] and "did not fit in memory" in row["notes"][0]
    assert "Warning: batch 2097152 did not fit in memory on cpu; trying 1048576" in p.stderr
