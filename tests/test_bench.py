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
    r = cli("bench", "--model", name, "-b", "1", "-b", "4", "--warmup", "1", "--iters", "3", "--min-time", "0",
            "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    rows = r.json()
    assert [row["batch_size"] for row in rows] == [1, 4]
    # by hand: N=16 patches, T=17 tokens, D=32, MLP 128, 2 blocks, 5 classes, 3x8x8 patches
    # embed 16*32*192 + blocks 2*(17*32*96 + 17*32*32 + 2*17*17*32 + 17*32*128*2) + head 32*5 = 553,248 MACs
    exact = 2 * 553_248
    for row in rows:
        assert KEYS <= set(row)
        assert row["flops_per_image"] == exact and row["flops_source"].startswith("analytic")
        assert row["image_size"] == [32, 32] and row["device"] == "cpu" and row["dtype"] == "float32"
        assert row["img_per_s"] == pytest.approx(row["batch_size"] / (row["ms_per_batch"] / 1e3))
        assert row["tflops"] == pytest.approx(exact * row["img_per_s"] / 1e12)
        assert row["mfu"] == pytest.approx(row["tflops"] / row["peak_tflops"])
        assert row["peak_source"] == "measured: matmul probe in float32" and row["peak_tflops"] > 0
        assert row["ms_per_batch_p10"] <= row["ms_per_batch"] <= row["ms_per_batch_p90"]
        assert row["peak_memory_bytes"] >= row["memory_over_model_bytes"] >= 0 and row["iterations"] == 3


def test_timed_by_duration_as_well_as_count(cli, tiny_dir):
    """Batch 1 of a tiny model takes milliseconds: --min-time keeps timing until that many seconds are covered."""
    row = cli("bench", "--model", f"local-dir:{tiny_dir}", "--iters", "1", "--warmup", "1", "--min-time", "1",
              "--device", "cpu", "--peak", "1", "--json").json()[0]
    assert row["seconds"] >= 1 and row["iterations"] > 1


def test_each_row_reports_its_own_peak_memory(cli, tiny_dir):
    """A big batch first, then batch 1: the second row's peak is its own, not the process's lifetime peak."""
    rows = cli("bench", "--model", f"local-dir:{tiny_dir}", "--size", "128", "-b", "256", "-b", "1", "--iters", "1",
               "--warmup", "0", "--min-time", "0", "--device", "cpu", "--json").json()
    big, small = rows
    assert "reset per row" in big["memory_source"]
    # batch 256 at 128 px: the (256, 2 heads, 257, 257) float32 attention matrix alone is 129 MiB
    assert big["memory_over_model_bytes"] > 100 * 2**20 > small["memory_over_model_bytes"]
    assert small["peak_memory_bytes"] < big["peak_memory_bytes"]  # a lifetime peak could only rise


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


def test_batch_halving_logic():
    from vitcli.backend.bench import fit_batch
    from vitcli.errors import ModelError

    class OOM(Exception):
        pass

    tried, said = [], []

    def run(b):
        tried.append(b)
        if b > 5:
            raise OOM("out of memory")
        return f"ran {b}"

    oom = lambda e: isinstance(e, OOM)  # noqa: E731
    assert fit_batch(run, 48, oom, said.append, " on cpu") == ("ran 3", 3, said)
    assert tried == [48, 24, 12, 6, 3]
    assert said == ["batch 48 did not fit in memory on cpu; trying 24", "batch 24 did not fit in memory on cpu; trying 12",
                    "batch 12 did not fit in memory on cpu; trying 6", "batch 6 did not fit in memory on cpu; trying 3"]
    with pytest.raises(ModelError, match="m: batch 1 does not fit in memory"):
        fit_batch(lambda b: run(b * 100), 4, oom, lambda s: None, name="m")
    with pytest.raises(ValueError):  # only out-of-memory is retried
        fit_batch(lambda b: int("x"), 4, oom, lambda s: None)


PROBE = """
import resource, sys
import vitcli.backend.bench  # torch and timm loaded: now cap the address space 256 MiB above what is mapped
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**28, vm + 2**28))
sys.argv = ["vitcli", *sys.argv[1:]]
from vitcli.cli import main
main()
"""


def test_batch_fallback_on_real_out_of_memory(tiny_dir):
    """Under a real memory cap, a batch that cannot be allocated is halved until it fits, and said so."""
    p = subprocess.run([sys.executable, "-c", PROBE, "bench", "--model", f"local-dir:{tiny_dir}", "-b", str(2**16),
                        "--warmup", "0", "--iters", "1", "--min-time", "0", "--device", "cpu", "--peak", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads(p.stdout)[0]
    assert row["requested_batch_size"] == 2**16 and 1 <= row["batch_size"] < 2**16
    assert row["notes"] and "did not fit in memory" in row["notes"][0]
    assert "Warning: batch 65536 did not fit in memory on cpu; trying 32768" in p.stderr
