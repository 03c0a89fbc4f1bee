#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with .device/ carried (bench/gpu/prepare.sh).
# Only 8 files come back from $OUT, so everything goes into three: stages.txt (one line a
# stage: exit code, seconds, peak GPU MiB sampled every 0.5 s), log.txt (every stage's output,
# appended as it ends, so a run cut short keeps what finished) and gpu.txt. A failing stage
# does not stop the next.
#   STAGES="parity probe" bench/gpu/run.sh       (default: parity probe bench)
# Stages:
#   parity      CUDA f32 and bf16-product forward vs the PyTorch goldens (MiniLM, tiny BERT)
#   probe       where GPU time goes: 5 MiniLM inference and train steps at batch 8, f32 then
#               bf16 products, each step timed
#   bench       inference and training windows/s, MiniLM and BERT-base at seq 384, batch 32,
#               qa (products in $PRODUCTS, default bf16) and PyTorch eager bf16
#               (bench/peers/torch_bench.py) in the same run
#   train_bf16  the reference recipe of shared/data/README.md (+ eval on dev), bf16
#   train_fp16  the same with fp16 and dynamic loss scaling
# Per-stage time limit: T seconds (default 280); a device command may run 600 s at most.
set -u
dev=$PWD/.device
out=${OUT:-/tmp/qa-gpu-out}
work=$(mktemp -d)
mkdir -p "$out"
for b in qa parity; do
  [ -x "$dev/bin/$b" ] || { zstd -dqf "$dev/bin/$b.zst" -o "$dev/bin/$b" && chmod +x "$dev/bin/$b"; }
done
weights=$dev/shared/models/all-MiniLM-L6-v2/model.safetensors
[ -f "$weights" ] || zstd -dqf "$weights.zst" -o "$weights"
export QA_SHARED_DIR=$dev/shared CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1 || true

stage() {
  local name=$1
  shift
  local began=$SECONDS
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$work/$name.mem" 2>/dev/null &
  local sampler=$!
  timeout "${T:-280}" "$@" >"$work/$name.log" 2>&1
  local rc=$?
  kill "$sampler" 2>/dev/null
  local peak
  peak=$(sort -n "$work/$name.mem" 2>/dev/null | tail -1)
  echo "$name rc=$rc $((SECONDS - began))s peak_gpu_mib=${peak:-?}" | tee -a "$out/stages.txt"
  { echo "=== $name (rc=$rc) ==="; tail -c 20000 "$work/$name.log"; echo; } >>"$out/log.txt"
}

recipe() {
  local name=$1 precision=$2
  stage "$name" "$dev/bin/qa" train \
    --model-name-or-path "$dev/shared/models/all-MiniLM-L6-v2" \
    --train-file "$dev/shared/data/covid-qa/train.json" \
    --validation-file "$dev/shared/data/covid-qa/dev.json" \
    --output-dir "/tmp/$name" --overwrite-output-dir \
    --max-seq-length 384 --doc-stride 128 --per-device-train-batch-size 32 \
    --per-device-eval-batch-size 64 --learning-rate 5e-5 --weight-decay 0.01 \
    --warmup-ratio 0.1 --num-train-epochs 3 --seed 42 --logging-steps 50 "$precision"
  for f in train_results.json eval_results.json train_log.jsonl; do
    { echo "=== $name/$f ==="; cat "/tmp/$name/$f" 2>/dev/null; echo; } >>"$out/log.txt"
  done
}

for s in ${STAGES:-parity probe bench}; do
  case $s in
    parity) stage parity "$dev/bin/parity" --test-threads 1 --nocapture minilm tiny_bert_qa_from_safetensors ;;
    probe)
      # Per-step times go to the log: compilation/autotuning vs steady state vs a stall.
      for p in f32 bf16; do
        stage "probe_infer_$p" "$dev/bin/qa" bench --workload infer --config minilm --batch 8 --steps 5 --products "$p"
        stage "probe_train_$p" "$dev/bin/qa" bench --workload train --config minilm --batch 8 --steps 5 --products "$p"
      done ;;
    bench)
      for w in infer train; do
        for c in minilm bert-base; do
          stage "qa_${w}_$c" "$dev/bin/qa" bench --workload "$w" --config "$c" --batch 32 --steps 10 --products "${PRODUCTS:-bf16}"
          stage "torch_${w}_$c" python3 bench/peers/torch_bench.py "$w" "$c" 384 32 10
        done
      done ;;
    train_bf16) recipe train_bf16 --bf16 ;;
    train_fp16) recipe train_fp16 --fp16 ;;
    *) echo "unknown stage $s" | tee -a "$out/stages.txt" ;;
  esac
done
