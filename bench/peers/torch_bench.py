"""Peer for `cargo xtask bench`: the same synthetic QA workloads in PyTorch eager
(transformers *ForQuestionAnswering built from a config, random weights).
Prints one JSON line per workload.

Usage: python3 torch_bench.py WORKLOAD(infer|train) CONFIG(minilm|bert-base|deberta-v3-minilm|DIR) SEQ BATCH STEPS [LAUNCHED_AT]

deberta-v3-minilm is MiniLM's sizes with DeBERTa-v3's vocabulary and relative attention, as
`qa bench --config deberta-v3-minilm` builds it.

LAUNCHED_AT (Unix seconds, as `cargo xtask bench` passes it, and `qa bench --launched-at`)
also times the first step from launch, interpreter start and imports included.
"""
import json
import resource
import sys
import time

import torch
from transformers import (AutoConfig, AutoModelForQuestionAnswering, BertConfig,
                          BertForQuestionAnswering, DebertaV2Config)

SIZES = {"minilm": (384, 6, 12, 1536), "bert-base": (768, 12, 12, 3072)}


def main():
    # Timed from here (the imports done, the model not yet built), as `qa bench` times from
    # before it builds its model; LAUNCHED_AT also counts interpreter start and imports.
    began = time.perf_counter()
    launched = float(sys.argv[6]) if len(sys.argv) > 6 else float("nan")
    workload, name, seq, batch, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    if name in SIZES:
        h, layers, heads, inter = SIZES[name]
        config = BertConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=inter)
    elif name == "deberta-v3-minilm":
        config = DebertaV2Config(vocab_size=128100, hidden_size=384, num_hidden_layers=6,
                                 num_attention_heads=12, intermediate_size=1536,
                                 max_position_embeddings=512, relative_attention=True,
                                 position_buckets=256, norm_rel_ebd="layer_norm",
                                 share_att_key=True, pos_att_type=["p2c", "c2p"],
                                 position_biased_input=False, type_vocab_size=0)
    else:
        config = AutoConfig.from_pretrained(name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if isinstance(config, BertConfig):
        model = BertForQuestionAnswering(config).to(device)
    else:
        model = AutoModelForQuestionAnswering.from_config(config).to(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, config.vocab_size, (batch, seq), generator=g).to(device)
    starts = torch.randint(0, seq, (batch,), generator=g).to(device)
    ends = torch.randint(0, seq, (batch,), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if workload == "infer":
        model.eval()
        with torch.no_grad(), torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            model(input_ids=ids)
            sync()
            first = time.perf_counter() - began
            first_from_launch = time.time() - launched
            t0 = time.perf_counter()
            for _ in range(steps):
                model(input_ids=ids)
            sync()
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
        first, t0 = None, None
        for step in range(steps + 1):
            if step == 1:
                sync()
                first = time.perf_counter() - began
                first_from_launch = time.time() - launched
                t0 = time.perf_counter()
            with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
                loss = model(input_ids=ids, start_positions=starts, end_positions=ends).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
        sync()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    # Linux reports ru_maxrss in KiB: the process's peak resident memory, as `qa bench`'s VmHWM.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peer": f"pytorch {torch.__version__} eager ({device}, {dtype})", "workload": workload,
                      "model": name, "seq": seq, "batch": batch,
                      "windows_per_second": batch * steps / seconds,
                      "time_to_first_step_s": first,
                      "first_step_from_launch_s": None if launched != launched else first_from_launch,
                      "peak_gpu_mib": peak, "peak_rss_mib": peak_rss}))


if __name__ == "__main__":
    main()
