#!/usr/bin/env bash
# The GPU check, one script: at most ~8 minutes on one H100/H200-class GPU, nothing downloaded.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine, from the repository root, after `make setup`
#   bash benchmarks/gpu_check.sh --cpu      # the same steps at tiny sizes on the CPU (what CI and tests run)
#
# Steps (each one's output goes to benchmarks/out/gpu_check/<step>.log, JSON results to benchmarks/out/):
#   1. extract   bench_extract.py in bfloat16 at BLOOM-560m shape: tokens/s, share of the FLOP-bound rate
#                (peak measured with matmuls on the same GPU), peak GPU memory
#   2. ap        bench_ap_device.py: AP of 98,304 units x 4,000 contexts x 200 concepts on the GPU
#   3. tolerance the GPU tolerance tests (float32 / bfloat16 vs CPU; skipped on a CPU-only machine)
#   4. pipeline  the tiny pipeline end to end on the device (tests.support.tiny_checkpoints, then precompute run)
# It prints one table (step, status, seconds, headline) and writes benchmarks/out/gpu_check.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PRECOMPUTE=${PRECOMPUTE:-.venv/bin/precompute}
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
OUT=benchmarks/out
LOGS=$OUT/gpu_check
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$LOGS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [[ $MODE == gpu ]]; then
  DEVICE=cuda
  EXTRACT_ARGS=(--device cuda --dtype bfloat16)
  AP_ARGS=(--device cuda)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$LOGS/gpu.txt" 2>&1 || true
else
  DEVICE=cpu
  EXTRACT_ARGS=(--device cpu --dtype float32 --contexts 16 --repeats 1)
  AP_ARGS=(--device cpu --units 1024 --contexts 200 --concepts 4 --check 8)
fi

declare -a NAMES STATUS SECS HEADLINE
step() {  # step NAME TIMEOUT_S HEADLINE_GREP CMD...
  local name=$1 limit=$2 grep_for=$3; shift 3
  local start=$SECONDS rc
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  NAMES+=("$name"); SECS+=("$((SECONDS - start))")
  if [[ $rc -eq 0 ]]; then STATUS+=("ok"); elif [[ $rc -eq 124 ]]; then STATUS+=("timeout"); else STATUS+=("FAIL($rc)"); fi
  HEADLINE+=("$(grep -E "$grep_for" "$LOGS/$name.log" | tail -1 | cut -c1-110)")
}

step extract 180 "overhead|tokens/s" "$PY" benchmarks/bench_extract.py "${EXTRACT_ARGS[@]}"
step ap 90 "AP/s" "$PY" benchmarks/bench_ap_device.py "${AP_ARGS[@]}"
step tolerance 90 "passed|failed|skipped" "$PY" -m pytest -q -p no:cacheprovider \
  tests/reliability/test_determinism.py tests/model/test_architectures.py -k "cuda or gpu or tolerance"
step pipeline 120 "checkpoint\(s\) written|error" bash -c \
  "'$PY' -m tests.support.tiny_checkpoints '$WORK/tiny' --steps 8 && sed 's#../data/tiny-local#$WORK/tiny#' configs/tiny-local.toml > '$WORK/run.toml' && '$PRECOMPUTE' run '$WORK/run.toml' --device $DEVICE --out '$WORK/tiny.duckdb' && '$PRECOMPUTE' info '$WORK/tiny.duckdb'"

printf '\n%-10s %-10s %8s  %s\n' step status seconds headline
json="{\"mode\": \"$MODE\", \"steps\": ["
fail=0
for i in "${!NAMES[@]}"; do
  printf '%-10s %-10s %8s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${HEADLINE[$i]}"
  [[ ${STATUS[$i]} == ok ]] || fail=1
  h=${HEADLINE[$i]//\\/\\\\}; h=${h//\"/\\\"}
  json+="$([[ $i -gt 0 ]] && echo ', '){\"step\": \"${NAMES[$i]}\", \"status\": \"${STATUS[$i]}\", \"seconds\": ${SECS[$i]}, \"headline\": \"$h\"}"
done
json+="]}"
echo "$json" > "$OUT/gpu_check.json"
echo "logs: $LOGS/  results: $OUT/gpu_check.json $OUT/bench_extract-$DEVICE.json $OUT/bench_ap_device-$DEVICE.json"
exit $fail
