"""CPU inference peers for `cargo xtask bench`: what a CPU user runs instead of PyTorch fp32.

The same synthetic workload as `qa bench --workload infer` (BertForQuestionAnswering built
from a config, random weights, full windows), in one of:

- torch-f32:  PyTorch eager fp32
- torch-bf16: PyTorch eager under torch.autocast("cpu", dtype=torch.bfloat16)
- torch-int8: torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
- ort-f32:    ONNX Runtime on the graph after onnxruntime.transformers.optimizer (model_type bert)
- ort-int8:   ONNX Runtime, dynamic int8 per channel on that optimized graph
              (quantize_dynamic(weight_type=QInt8, per_channel=True))

Prints one JSON line: windows_per_second, first step, peak RSS (ru_maxrss).

Usage: python3 cpu_infer_peers.py PEER CONFIG(minilm|bert-base) SEQ BATCH STEPS [THREADS]
"""
import json
import os
import resource
import sys
import tempfile
import time

import torch
from transformers import BertConfig, BertForQuestionAnswering

SIZES = {"minilm": (384, 6, 12, 1536), "bert-base": (768, 12, 12, 3072)}
PEERS = ["torch-f32", "torch-bf16", "torch-int8", "ort-f32", "ort-int8"]


def build(name):
    h, layers, heads, inter = SIZES[name]
    config = BertConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter)
    torch.manual_seed(0)
    return config, BertForQuestionAnswering(config).eval()


def torch_runner(peer, model):
    if peer == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    autocast = peer == "torch-bf16"

    def run(ids, types, mask):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        return out.start_logits

    version = f"pytorch {torch.__version__}"
    what = {"torch-f32": "eager fp32", "torch-bf16": "bf16 autocast",
            "torch-int8": "quantize_dynamic qint8"}[peer]
    return run, f"{version} {what}"


def ort_runner(peer, model, config, seq, threads, workdir):
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    raw = os.path.join(workdir, "model.onnx")
    ids = torch.ones((1, seq), dtype=torch.long)
    torch.onnx.export(
        model, (ids, torch.zeros_like(ids), torch.ones_like(ids)), raw,
        input_names=["input_ids", "token_type_ids", "attention_mask"],
        output_names=["start_logits", "end_logits"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                      ["input_ids", "token_type_ids", "attention_mask", "start_logits", "end_logits"]},
        opset_version=17, dynamo=False)
    fused = os.path.join(workdir, "model.opt.onnx")
    optimized = optimizer.optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    optimized.save_model_to_file(fused)
    path = fused
    if peer == "ort-int8":
        path = os.path.join(workdir, "model.int8.onnx")
        quantize_dynamic(fused, path, weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def run(ids, types, mask):
        return session.run(["start_logits"], {"input_ids": ids.numpy(), "token_type_ids": types.numpy(),
                                              "attention_mask": mask.numpy()})[0]

    what = "optimized fp32" if peer == "ort-f32" else "optimized, dynamic int8 per channel"
    return run, f"onnxruntime {ort.__version__} {what}"


def main():
    peer, name = sys.argv[1], sys.argv[2]
    seq, batch, steps = map(int, sys.argv[3:6])
    threads = int(sys.argv[6]) if len(sys.argv) > 6 else os.cpu_count()
    if peer not in PEERS:
        sys.exit(f"unknown peer {peer!r} (expected one of {', '.join(PEERS)})")
    torch.set_num_threads(threads)
    config, model = build(name)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (batch, seq), generator=g)
    types = (torch.arange(seq) >= seq // 4).long().expand(batch, seq).contiguous()
    mask = torch.ones_like(ids)
    with tempfile.TemporaryDirectory() as workdir:
        began = time.perf_counter()
        if peer.startswith("torch"):
            run, label = torch_runner(peer, model)
        else:
            run, label = ort_runner(peer, model, config, seq, threads, workdir)
        run(ids, types, mask)
        first = time.perf_counter() - began
        t0 = time.perf_counter()
        for _ in range(steps):
            run(ids, types, mask)
        seconds = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peer": label, "workload": "infer", "model": name, "seq": seq, "batch": batch,
                      "steps": steps, "threads": threads,
                      "windows_per_second": batch * steps / seconds,
                      "time_to_first_step_s": first, "peak_rss_mib": peak_rss}))


if __name__ == "__main__":
    main()
