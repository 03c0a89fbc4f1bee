#!/bin/bash
# Data-parallel overhead of `qa train` on this machine's CPU with all-MiniLM-L6-v2:
# 1 device × 8 windows vs 2 peers in one process × 4 vs 2 processes (nodes on loopback) × 4,
# the same global batch of 8. Run from the repository root after
# `cargo build --release -p qa-cli`; prints one line per run (results in
# bench/results/data-parallel-cpu-2core.md).
set -euo pipefail
QA=${QA:-target/release/qa}
SHARED=${SHARED:-../shared}
PORT=${PORT:-31500}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
COMMON=(--model-name-or-path "$SHARED/models/all-MiniLM-L6-v2"
  --train-file "$SHARED/data/covid-qa/train.json" --max-seq-length 128 --doc-stride 32
  --max-train-samples 8 --train-windows with-answer --max-steps 12 --logging-steps 1
  --save-steps 100000)
"$QA" train "${COMMON[@]}" --output-dir "$OUT/one" --per-device-train-batch-size 8 2>/dev/null >/dev/null
"$QA" train "${COMMON[@]}" --output-dir "$OUT/threads" --per-device-train-batch-size 4 \
  --devices cpu,cpu 2>/dev/null >/dev/null
"$QA" train "${COMMON[@]}" --output-dir "$OUT/nodes" --per-device-train-batch-size 4 \
  --nnodes 2 --node-rank 1 --master-port "$PORT" 2>/dev/null >/dev/null &
"$QA" train "${COMMON[@]}" --output-dir "$OUT/nodes" --per-device-train-batch-size 4 \
  --nnodes 2 --node-rank 0 --master-port "$PORT" 2>/dev/null >/dev/null
wait
for run in one threads nodes; do
  python3 - "$OUT/$run/train_results.json" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
steps = r["global_step"]
print(f"{sys.argv[2]:8} world {r['world_size']}  {r['train_samples_per_second']:.2f} windows/s  "
      f"{r['train_runtime'] / steps:.3f} s/step  collective {r['collective_seconds'] / steps:.3f} s/step  "
      f"first step {r['time_to_first_step']:.2f} s")
PY
done
