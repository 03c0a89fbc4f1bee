"""Groups a `perf report` of one `qa bench` workload into the op families of issue 14's table.

    perf record -F 499 -g -o train.data -- target/release/qa bench --workload train \
        --config minilm --seq 384 --batch 4 --steps 3
    perf report -i train.data --no-children --sort symbol --stdio | python3 bench/profile/ops.py

Prints a Markdown table: share of samples per family, biggest symbols first.
"""
import re
import sys

# (family, pattern on the symbol), first match wins.
FAMILIES = [
    # The fused kernels' products go through the `gemm` crate (`gemm_f32::microkernel`);
    # before them, Burn's matmul went through matrixmultiply (`sgemm_kernel`, `packing::pack`).
    ("GEMM kernel (gemm crate / matrixmultiply)", r"sgemm_kernel|gemm"),
    ("GEMM packing", r"packing::pack"),
    ("fused kernels (softmax, LayerNorm, GELU, AdamW, attention glue)", r"qa_model::fused::"),
    # The dropout mask loop (`streams::fill_chunks`) is inlined into rayon's fold_with
    # (seen with `perf annotate`: xoshiro's shifts and rotates, two stores per draw).
    ("dropout masks (RNG)", r"Producer::fold_with|Xoshiro|Uniform"),
    ("weight initialisation (Normal draws)", r"Normal"),
    ("kernel zeroing fresh pages (allocation churn)", r"clear_page|page_fault|do_anonymous|alloc_pages|__handle_mm|mi_page|mi_malloc|mi_free|_mi_"),
    ("copies (memmove/memset: layout changes, contiguous())", r"memmove|memset|memcpy"),
    ("exp/erf/tanh/pow (softmax, GELU, LayerNorm)", r"expf|expm1|erf|tanh|powf|__exp|__log"),
    ("element-wise SIMD passes (add, mul, div, ...)", r"_mm512|_mm256|simd|macerator"),
    ("ndarray iteration (mapv, zip, to_vec_mapped)", r"ndarray::|to_vec_mapped|mapv"),
    ("thread pool spinning (rayon yield)", r"sched_yield|__schedule|finish_task_switch|do_syscall|rayon|crossbeam"),
    ("autodiff bookkeeping, tensor data (burn)", r"burn_|TensorData"),
    ("random numbers (other)", r"rand"),
]

def main():
    totals = {name: 0.0 for name, _ in FAMILIES}
    totals["other"] = 0.0
    top = {}
    for line in sys.stdin:
        m = re.match(r"\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s{2,}", line)
        if not m:
            continue
        share, symbol = float(m.group(1)), m.group(2)
        family = next((name for name, pat in FAMILIES if re.search(pat, symbol)), "other")
        totals[family] += share
        top.setdefault(family, []).append((share, symbol[:70]))
    print("| op family | share of samples | biggest symbols |")
    print("|---|---|---|")
    for name, share in sorted(totals.items(), key=lambda kv: -kv[1]):
        if share < 0.05:
            continue
        syms = ", ".join(f"`{s}` {p:.1f}%" for p, s in sorted(top.get(name, []), reverse=True)[:2])
        print(f"| {name} | {share:.1f}% | {syms} |")

main()
