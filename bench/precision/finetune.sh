#!/usr/bin/env bash
# The fine-tuned model the precision table (bench/results/precision-cpu-2core.md) is measured
# on: all-MiniLM-L6-v2 fine-tuned on every COVID-QA training question, only the windows that
# hold their answer, 2 epochs at learning rate 1e-4 (issue "CPU inference in int8 and bf16").
# Usage: bench/precision/finetune.sh QA_BINARY OUTPUT_DIR   (about an hour on 2 cores)
set -euo pipefail
qa=${1:?usage: finetune.sh QA_BINARY OUTPUT_DIR}
out=${2:?usage: finetune.sh QA_BINARY OUTPUT_DIR}
shared=${QA_SHARED_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared}
exec "$qa" train \
  --model-name-or-path "$shared/models/all-MiniLM-L6-v2" \
  --train-file "$shared/data/covid-qa/train.json" \
  --output-dir "$out" \
  --train-windows with-answer \
  --learning-rate 1e-4 --num-train-epochs 2 --per-device-train-batch-size 16 \
  --warmup-ratio 0.1 --weight-decay 0.01 --seed 42 \
  --max-seq-length 384 --doc-stride 128 \
  --save-strategy no --logging-steps 10
