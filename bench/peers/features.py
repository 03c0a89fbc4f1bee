"""Peer for `cargo xtask bench`: run_qa's prepare_train_features with the Python `tokenizers`
library (the fast tokenizer run_qa uses), on a SQuAD-layout file. Prints one JSON line.

Usage: python3 features.py DATA.json TOKENIZER.json [max_length] [stride]
"""
import json
import sys
import time

from tokenizers import Tokenizer


def main():
    data_path, tok_path = sys.argv[1], sys.argv[2]
    max_length = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    stride = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    examples = []
    for article in json.load(open(data_path))["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                a = qa["answers"][0] if qa["answers"] else None
                examples.append((qa["question"].lstrip(), p["context"], a))
    started = time.perf_counter()
    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(max_length=max_length, stride=stride, strategy="only_second")
    tok.no_padding()
    encodings = tok.encode_batch([(q, c) for q, c, _ in examples])
    windows = 0
    for (q, c, answer), enc in zip(examples, encodings):
        for e in [enc] + enc.overflowing:
            windows += 1
            seq = e.sequence_ids
            offsets = e.offsets
            if answer is None:
                continue
            start_char = answer["answer_start"]
            end_char = start_char + len(answer["text"])
            ts = 0
            while seq[ts] != 1:
                ts += 1
            te = len(e.ids) - 1
            while seq[te] != 1:
                te -= 1
            if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
                continue
            while ts < len(offsets) and offsets[ts][0] <= start_char:
                ts += 1
            while offsets[te][1] >= end_char:
                te -= 1
    seconds = time.perf_counter() - started
    import tokenizers
    print(json.dumps({"peer": "python tokenizers " + tokenizers.__version__, "windows": windows,
                      "seconds": seconds, "windows_per_second": windows / seconds}))


if __name__ == "__main__":
    main()
