#!/usr/bin/env bash
# The prepared GPU check of issue 8, for a session lent a GPU through the device tool: ViT-B/16 and ViT-L/14
# at 224 in bfloat16 at batch 256 (random weights, no download), eager and torch.compile. Writes JSON to $OUT.
#   run: bash benchmarks/gpu_bench.sh        (goal: MFU >= 50% for ViT-L/14)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
pip install -q -e . 2>&1 | tail -1 || true
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
vitcli bench --model vit_base_patch16_224 --model vit_large_patch14_224 --dtype bfloat16 -b 256 --device cuda \
  --warmup 5 --iters 20 --json | tee "$OUT/gpu_bench_eager.json"
vitcli bench --model vit_base_patch16_224 --model vit_large_patch14_224 --dtype bfloat16 -b 256 --device cuda \
  --warmup 5 --iters 20 --compile --json | tee "$OUT/gpu_bench_compile.json"
