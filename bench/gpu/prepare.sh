#!/usr/bin/env bash
# Run here (not on the GPU machine): builds everything bench/gpu/run.sh needs into two packs
# under .device/ (git-ignored), one per device command, each named in the device tool's
# `carry`. The GPU machine has no Rust toolchain and no network, and one command carries at
# most 64 MiB with the working tree: three binaries and MiniLM's 42 MB do not fit together, so
#   .device/checks  qa, the parity and training test binaries, the tiny goldens, COVID-QA
#                   (stages parity and speed)
#   .device/recipe  qa, the parity test binary, MiniLM, COVID-QA (stages parity_minilm, recipe)
# Everything goes xz-compressed (run.sh unpacks with xz, or Python's lzma where xz is missing),
# binaries stripped; each pack's size is checked.
#   bench/gpu/prepare.sh            CUDA build (what the GPU machine runs)
#   FEATURES= bench/gpu/prepare.sh  CPU build, to try run.sh here first
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${QA_SHARED_DIR:-../shared}
features=${FEATURES---features cuda}
limit_mib=64
rm -rf .device
mkdir -p .device/bin

cargo build --release --locked -p qa-cli $features
# Test binaries, built for the same backend: on CUDA they check the GPU against PyTorch
# (qa-model's parity: forward; qa-train's training: 20 steps against the HF Trainer).
test_binary() {
  local crate=$1 name=$2 path
  path=$(cargo test --release --locked -p "$crate" $features --test "$name" --no-run 2>&1 |
    sed -n "s/.*Executable tests\/$name.rs (\(.*\))/\1/p")
  [ -x "$path" ] || { echo "could not find the $name test binary" >&2; exit 1; }
  echo "$path"
}
parity=$(test_binary qa-model parity)
training=$(test_binary qa-train training)
for pair in "target/release/qa:qa" "$parity:parity" "$training:training"; do
  src=${pair%%:*} name=${pair##*:}
  cp "$src" ".device/bin/$name"
  strip ".device/bin/$name"
  xz -9e -T2 ".device/bin/$name"
done

minilm=$shared/models/all-MiniLM-L6-v2
tiny=$shared/golden/tiny-bert-qa
tree_mib=$(git ls-files -z | xargs -0 du -cb | tail -1 | awk '{print int($1 / 1048576) + 1}')

# pack NAME BINARY...: the binaries, the commit, the build path (the test binaries read
# fixtures there; run.sh links it to the repository) and CubeCL's caches from an earlier run.
pack() {
  local name=$1 dir=.device/$1
  shift
  mkdir -p "$dir/bin" "$dir/shared/data" "$dir/shared/golden" "$dir/shared/models"
  for b in "$@"; do cp ".device/bin/$b.xz" "$dir/bin/"; done
  echo "$PWD" >"$dir/build_root"
  git rev-parse HEAD >"$dir/commit"
  [ -f bench/gpu/cache/cubecl-cache.tar ] && cp bench/gpu/cache/cubecl-cache.tar "$dir/"
  cp -r "$shared/data/covid-qa" "$dir/shared/data/"
  xz -9 -T2 "$dir"/shared/data/covid-qa/*.json
  # MiniLM's tokenizer (tiny-bert-qa's is the same bytes: run.sh copies it there).
  mkdir -p "$dir/shared/models/all-MiniLM-L6-v2"
  find "$minilm" -maxdepth 1 -type f ! -name model.safetensors -exec cp {} "$dir/shared/models/all-MiniLM-L6-v2/" \;
}

pack checks qa parity training
mkdir -p .device/checks/shared/golden/tiny-bert-qa
# tiny-bert-qa without pytorch_model.bin (the safetensors test covers the GPU path), and
# without its tokenizer files when they are MiniLM's own bytes.
skip=(! -name pytorch_model.bin)
for f in tokenizer.json vocab.txt; do
  cmp -s "$tiny/$f" "$minilm/$f" && skip+=(! -name "$f")
done
find "$tiny" -maxdepth 1 -type f "${skip[@]}" -exec cp {} .device/checks/shared/golden/tiny-bert-qa/ \;

pack recipe qa parity
cp "$shared/golden/minilm_encoder.safetensors" .device/recipe/shared/golden/
# fp16 weights still shrink ~11% (46 → 41 MB).
xz -9 -T2 -c "$minilm/model.safetensors" >.device/recipe/shared/models/all-MiniLM-L6-v2/model.safetensors.xz

rm -rf .device/bin
for p in checks recipe; do
  mib=$(du -sm ".device/$p" | cut -f1)
  echo "pack $p: $mib MiB + working tree $tree_mib MiB (limit $limit_mib)"
  if [ $((mib + tree_mib)) -gt "$limit_mib" ]; then
    echo "error: .device/$p and the working tree exceed the device's $limit_mib MiB" >&2
    exit 1
  fi
done
