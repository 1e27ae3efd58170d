#!/usr/bin/env bash
# The prepared GPU checks, for a session lent a GPU through the device tool (one GPU, 16 cores, a bare machine
# without network). Runs unchanged, from anywhere:
#     bash benchmarks/gpu_bench.sh       (about 6-7 minutes on an H200, estimated; each step has its own time
#                                         limit: 13 minutes if every step ran into it)
# Writes to $OUT (default .): versions.txt, gpu.txt, features_gpu_1080p.json (+ .log), features_gpu_1080p_cls.json
# (+ .log), gpu_bench_eager.json, gpu_bench_compile.json, steps.txt (each step's exit code and end time).
#   1. features (issue 19): ViT-B/16 in bfloat16, 2048 JPEGs of 1920x1080 (made once by benchmarks/features.py
#      --make, kept in a work folder), batch 256: vitcli default, --fast-decode and --gpu-decode against forward
#      alone, 3 interleaved rounds, final patch tokens (the default --mode; 600 KB of float32 per image to write).
#      Goal: >= 0.8 of forward alone.
#   2. the same with --mode cls (768 floats per image), 2 rounds: the decoding pipeline without the output's
#      weight, to tell the two apart.
#   3. vitcli bench (issue 8): ViT-B/16 and ViT-L/14 at 224 in bfloat16 at batch 256 (random weights, no
#      download), eager and torch.compile. Goal: MFU >= 50% for ViT-L/14.
# A failed or timed-out step is recorded in steps.txt and the next one runs.
#
# Smoke test on a CPU (tiny settings; the same python code, minus --gpu-decode, which needs CUDA):
#   OUT=/tmp/g SKIP_INSTALL=1 SKIP_BENCH=1 FEATURES_DEVICE=cpu FEATURES_MODEL=vit_tiny_patch16_224 \
#     FEATURES_SIZE=320x180 FEATURES_IMAGES=16 FEATURES_BATCH=4 FEATURES_ROUNDS=1 \
#     FEATURES_METHODS=forward,vitcli,fast bash benchmarks/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # works whether or not the install below succeeds
DEVICE="${FEATURES_DEVICE:-cuda}"
IMAGES_DIR="$(mktemp -d)"  # the JPEGs, made once for both feature steps
trap 'rm -rf "$IMAGES_DIR"' EXIT
SECONDS=0
exec 3>&1  # the steps' own messages go here, wherever their output is redirected

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record the exit code
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s) at ${SECONDS} s" >&3
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc at ${SECONDS} s" >&3
    echo "$name exit=$rc at=${SECONDS}s" >> "$OUT/steps.txt"
}

features() {  # features NAME LIMIT_S ROUNDS EXTRA_ARGS...: benchmarks/features.py on the 1080p JPEGs, JSON to $OUT
    local name=$1 limit=$2 rounds=$3
    shift 3
    step "$name" "$limit" python benchmarks/features.py --make "${FEATURES_SIZE:-1920x1080}" \
        --images "${FEATURES_IMAGES:-2048}" --workdir "$IMAGES_DIR" --model "${FEATURES_MODEL:-vit_base_patch16_224}" \
        --dtype bfloat16 --device "$DEVICE" --batch-size "${FEATURES_BATCH:-256}" --rounds "$rounds" \
        --methods "${FEATURES_METHODS:-forward,vitcli,fast,gpu}" --json "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
    tail -n 16 "$OUT/$name.log"
    python - "$OUT/$name.json" <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
for label, s in d["sets"].items():
    print(label, d["mode"], {k: round(v["end_to_end"], 1) for k, v in s["img_per_s"].items()}, "img/s end to end")
    for k, r in s["ratio_to_forward_alone"].items():
        print(f"  {k:8s} vs forward alone: end to end {r['end_to_end']:.2f}, after load {r['after_load']:.2f}")
    for k, st in s["startup"].items():
        print(f"  {k:8s} start-up:", {a: (round(b, 2) if isinstance(b, float) else b) for a, b in st.items()})
    print("  agreement with default:", s["agreement_with_default"], "| default vs timm:", s["default_vs_timm"])
for lines in d["goals"].values():
    print("\n".join(lines))
EOF
}

if [ -z "${SKIP_INSTALL:-}" ]; then
    timeout 90 pip install -q -e . 2>&1 | tail -1 || true  # for the dependencies; vitcli itself runs from src/
fi
python -c "import sys, torch, timm, PIL, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'timm', \
timm.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt" || true

features features_gpu_1080p 240 "${FEATURES_ROUNDS:-3}"
features features_gpu_1080p_cls 120 "${FEATURES_ROUNDS:-2}" --mode cls

if [ -z "${SKIP_BENCH:-}" ]; then
    step bench_eager 90 python -m vitcli bench --model vit_base_patch16_224 --model vit_large_patch14_224 \
        --dtype bfloat16 -b 256 --device cuda --warmup 5 --iters 20 --json > "$OUT/gpu_bench_eager.json"
    step bench_compile 240 python -m vitcli bench --model vit_base_patch16_224 --model vit_large_patch14_224 \
        --dtype bfloat16 -b 256 --device cuda --warmup 5 --iters 20 --compile --json \
        > "$OUT/gpu_bench_compile.json"
fi
echo "done in ${SECONDS} s"
cat "$OUT/steps.txt"
