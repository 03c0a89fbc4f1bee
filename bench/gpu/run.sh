#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, with one pack of bench/gpu/prepare.sh
# carried; two commands back to back, since one carries at most 64 MiB:
#   carry [".device/checks"]: bench/gpu/run.sh    stages parity speed       (~4 min)
#   carry [".device/recipe"]: bench/gpu/run.sh    stages parity_minilm recipe (~5 min)
# (STAGES="..." picks others; PACK=checks|recipe where both packs are present, as here.)
# Stages, each writing its results as it ends (a run cut short keeps what finished):
#   parity         tiny-BERT QA logits vs PyTorch (f32 ≤ 1e-5), and 20 training steps'
#                  loss, gradient norm and weights against the HF Trainer (tiny BERT), with
#                  f32 and with bf16 products
#   parity_minilm  MiniLM last_hidden_state vs PyTorch (f32 ≤ 1e-4) and the bf16/fp16-product
#                  forward's agreement
#   speed          per-step time of MiniLM and BERT-base inference and training, batch $BATCH
#                  (32) × 384, bf16 products: qa (first step apart from the steady state) and
#                  PyTorch bf16 autocast (bench/peers/torch_bench.py) in the same run
#   recipe         the MiniLM COVID-QA recipe (bf16, batch 32, lr 5e-5, up to 3 epochs,
#                  evaluated on dev after each epoch), in whatever time the budget leaves
# Results: $OUT/gpu-h200-$PACK.json and .md (bench/gpu/report.py, rewritten after each stage;
# `report.py merge` joins the two packs' into bench/results/gpu-h200.json and .md), stages.txt
# (exit code, seconds, peak GPU MiB), log.txt (every stage's output), and cubecl-cache.tar
# (CubeCL's autotune and kernel caches, for bench/gpu/cache/ next time). Only 8 files come back
# from $OUT. A failing stage does not stop the next.
# Rehearsal on a CPU build (FEATURES= bench/gpu/prepare.sh) with small settings:
#   PACK=checks HALF=f32 BATCH=2 STEPS=2 CONFIGS=minilm BUDGET=900 bench/gpu/run.sh
#   PACK=recipe HALF=f32 RECIPE_EXTRA="--max-steps 4 --max-eval-samples 20" bench/gpu/run.sh
set -u
root=$PWD
if [ -z "${PACK:-}" ]; then
  packs=$(ls -d .device/*/ 2>/dev/null | wc -l)
  [ "$packs" = 1 ] || { echo "error: set PACK=checks or PACK=recipe (.device has $packs packs)" >&2; exit 2; }
  PACK=$(basename .device/*/)
fi
dev=$root/.device/$PACK
[ -d "$dev" ] || { echo "error: no pack $dev (bench/gpu/prepare.sh)" >&2; exit 2; }
case $PACK in
  checks) default_stages="parity speed" ;;
  *) default_stages="parity_minilm recipe" ;;
esac
out=${OUT:-/tmp/qa-gpu-out}
budget=${BUDGET:-540}
work=$(mktemp -d)
mkdir -p "$out"
began=$SECONDS
# Unpacks every .xz of the pack beside itself (xz, or Python's lzma where xz is missing).
find "$dev" -name '*.xz' | while read -r packed; do
  plain=${packed%.xz}
  [ -e "$plain" ] && continue
  xz -dc "$packed" >"$plain" 2>/dev/null ||
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$packed" "$plain"
done
chmod +x "$dev"/bin/*
minilm=$dev/shared/models/all-MiniLM-L6-v2
if [ -d "$dev/shared/golden/tiny-bert-qa" ]; then
  for f in tokenizer.json vocab.txt; do
    [ -f "$dev/shared/golden/tiny-bert-qa/$f" ] || cp "$minilm/$f" "$dev/shared/golden/tiny-bert-qa/"
  done
fi
export QA_SHARED_DIR=$dev/shared
# The test binaries read their fixtures where they were built (CARGO_MANIFEST_DIR): that path
# leads here when it does not exist on this machine.
build_root=$(cat "$dev/build_root")
if [ ! -e "$build_root" ]; then
  mkdir -p "$(dirname "$build_root")" && ln -s "$root" "$build_root"
fi
# CubeCL reads cubecl.toml from the working directory: minimal autotuning for the element-wise
# and reduction kernels (the products are cuBLASLt's), caches kept for the next run.
cache=$dev/cubecl-cache
mkdir -p "$cache"
[ -f "$dev/cubecl-cache.tar" ] && tar -xf "$dev/cubecl-cache.tar" -C "$cache"
cat >"$work/cubecl.toml" <<EOF
[autotune]
level = "minimal"
cache = { file = "$cache/autotune" }

[compilation]
cache = { file = "$cache/compilation" }
EOF
cd "$work"
# cuBLASLt: the machine's copy ships inside PyTorch's nvidia-cublas wheel.
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(nvidia.cublas.__path__[0], "lib"))' 2>/dev/null)
[ -n "$cublas" ] && export LD_LIBRARY_PATH=$cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  echo "commit $(cat "$dev/commit")"
  echo "cublasLt ${cublas:-not found}"
} >"$work/device.txt"

report() {
  python3 "$root/bench/gpu/report.py" "$work" "$out/gpu-h200-$PACK" ||
    echo "report.py failed" >>"$out/stages.txt"
}

# stage NAME SECONDS COMMAND...: runs COMMAND with a time limit, sampling GPU memory.
stage() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - began)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    echo "$name skipped: budget spent" | tee -a "$out/stages.txt"
    return
  fi
  local t0=$SECONDS
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$work/$name.mem" 2>/dev/null &
  local sampler=$!
  timeout "$limit" "$@" >"$work/$name.log" 2>&1
  local rc=$?
  kill "$sampler" 2>/dev/null
  local peak
  peak=$(sort -n "$work/$name.mem" 2>/dev/null | tail -1)
  echo "$name rc=$rc $((SECONDS - t0))s peak_gpu_mib=${peak:-?}" | tee -a "$out/stages.txt" "$work/stages.txt"
  { echo "=== $name (rc=$rc) ==="; tail -c 20000 "$work/$name.log"; echo; } >>"$out/log.txt"
  report
}

batch=${BATCH:-32}
half=${HALF:-bf16}
case $half in bf16 | fp16) half_flag=--$half ;; *) half_flag= ;; esac
for s in ${STAGES:-$default_stages}; do
  case $s in
    parity)
      stage parity_forward 60 "$dev/bin/parity" --test-threads 1 --nocapture tiny_bert_qa_from_safetensors
      stage parity_training 120 "$dev/bin/training" --test-threads 1 --nocapture twenty_steps ;;
    parity_minilm)
      stage parity_minilm 120 "$dev/bin/parity" --test-threads 1 --nocapture minilm ;;
    speed)
      for c in ${CONFIGS:-minilm bert-base}; do
        for w in infer train; do
          stage "qa_${w}_$c" 90 "$dev/bin/qa" bench --workload "$w" --config "$c" --batch "$batch" \
            --steps "${STEPS:-10}" --products "$half" --launched-at "$(date +%s.%N)"
          stage "torch_${w}_$c" 90 python3 "$root/bench/peers/torch_bench.py" "$w" "$c" 384 "$batch" \
            "${STEPS:-10}" "$(date +%s.%N)"
        done
      done ;;
    recipe)
      stage recipe "$budget" "$dev/bin/qa" train \
        --model-name-or-path "${RECIPE_MODEL:-$dev/shared/models/all-MiniLM-L6-v2}" \
        --train-file "$dev/shared/data/covid-qa/train.json" \
        --validation-file "$dev/shared/data/covid-qa/dev.json" \
        --output-dir "$work/recipe" --overwrite-output-dir \
        --max-seq-length 384 --doc-stride 128 --per-device-train-batch-size 32 \
        --per-device-eval-batch-size 64 --learning-rate 5e-5 --weight-decay 0.01 \
        --warmup-ratio 0.1 --num-train-epochs "${EPOCHS:-3}" --seed 42 --logging-steps 20 \
        --eval-strategy epoch $half_flag ${RECIPE_EXTRA:-} ;;
    *) echo "unknown stage $s" | tee -a "$out/stages.txt" ;;
  esac
done
tar -cf "$out/cubecl-cache.tar" -C "$cache" . 2>/dev/null
report
