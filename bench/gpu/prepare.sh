#!/usr/bin/env bash
# Run here (not on the GPU machine): builds everything bench/gpu/run.sh needs into .device/
# (git-ignored; name it in the device tool's `carry`). The GPU machine has no Rust toolchain
# and no network, and at most 64 MiB travel, so the binaries go zstd-compressed and only the
# files the runs read are copied.
#   bench/gpu/prepare.sh            CUDA build (what the GPU machine runs)
#   FEATURES= bench/gpu/prepare.sh  CPU build, to try run.sh here first
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${QA_SHARED_DIR:-../shared}
features=${FEATURES---features cuda}
out=.device
rm -rf "$out"
mkdir -p "$out/bin" "$out/shared/models" "$out/shared/data" "$out/shared/golden"

cargo build --release --locked -p qa-cli $features
# The parity tests, built for the same backend: on CUDA they check the GPU against PyTorch.
parity=$(cargo test --release --locked -p qa-model $features --test parity --no-run 2>&1 |
  sed -n 's/.*Executable tests\/parity.rs (\(.*\))/\1/p')
[ -x "$parity" ] || { echo "could not find the parity test binary" >&2; exit 1; }
for pair in "target/release/qa:qa" "$parity:parity"; do
  src=${pair%%:*} name=${pair##*:}
  cp "$src" "$out/bin/$name"
  strip "$out/bin/$name"
  zstd -q -19 --rm "$out/bin/$name" -o "$out/bin/$name.zst"
done

cp -r "$shared/models/all-MiniLM-L6-v2" "$out/shared/models/"
# fp16 weights still shrink ~9% (46 → 42 MB): room under the 64 MiB limit.
zstd -q -19 --rm "$out/shared/models/all-MiniLM-L6-v2/model.safetensors"
cp -r "$shared/data/covid-qa" "$out/shared/data/"
cp "$shared/golden/minilm_encoder.safetensors" "$out/shared/golden/"
mkdir -p "$out/shared/golden/tiny-bert-qa"
# tiny-bert-qa without pytorch_model.bin (4 MB): the safetensors test covers the GPU path.
find "$shared/golden/tiny-bert-qa" -maxdepth 1 -type f ! -name pytorch_model.bin \
  -exec cp {} "$out/shared/golden/tiny-bert-qa/" \;
du -sh "$out"
