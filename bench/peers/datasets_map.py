"""Peer for `cargo xtask bench scale`: run_qa's data stage with Hugging Face `datasets` — the
SQuAD-layout file flattened into a `Dataset`, then `.map(prepare_train_features, batched=True)`
as run_qa runs it (`hf_run_qa.prepare_train_features`: fast tokenizer, truncation only_second,
stride, overflowing windows padded to max length, labels), cached by `datasets` as an Arrow file
under CACHE_DIR. Run twice with the same CACHE_DIR,
the second run reads the cache (as a second `run_qa.py` does). Prints one JSON line: windows,
seconds of the data stage, whether the cache was used, peak RSS.

Usage: python3 datasets_map.py DATA.json MODEL_DIR CACHE_DIR [max_length] [stride]
"""
import json
import os
import resource
import sys
import time


def main():
    data_path, model_dir, cache_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 384
    stride = int(sys.argv[5]) if len(sys.argv) > 5 else 128
    import datasets
    from transformers import AutoTokenizer

    # run_qa's own prepare_train_features (windows padded to max_length, as run_qa's default
    # --pad_to_max_length), shared with the reproduce peer.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hf_run_qa import prepare_train_features

    # Timed from here, imports done (as `qa`'s "data ready" excludes process start).
    started = time.perf_counter()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = {"id": [], "question": [], "context": [], "answers": []}
    for article in json.load(open(data_path))["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                rows["id"].append(str(qa["id"]))
                rows["question"].append(qa["question"])
                rows["context"].append(p["context"])
                rows["answers"].append({
                    "text": [a["text"] for a in qa["answers"]],
                    "answer_start": [a["answer_start"] for a in qa["answers"]],
                })
    os.makedirs(cache_dir, exist_ok=True)
    # `load_dataset("json", ...)` would cache the flattened rows too; from_dict keeps the peer
    # to `.map`, the step this benchmark compares.
    raw = datasets.Dataset.from_dict(rows)

    cache_file = os.path.join(cache_dir, "train-features.arrow")
    cached = os.path.exists(cache_file)
    windows = raw.map(
        prepare_train_features, batched=True, remove_columns=raw.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_len": max_length, "stride": stride},
        cache_file_name=cache_file, load_from_cache_file=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "peer": f"datasets {datasets.__version__} .map (run_qa prepare_train_features)",
        "windows": len(windows), "seconds": seconds, "cache_used": cached,
        "cache_bytes": os.path.getsize(cache_file), "peak_rss_mib": peak}))


if __name__ == "__main__":
    main()
