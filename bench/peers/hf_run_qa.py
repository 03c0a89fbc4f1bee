"""The HF reference for `cargo xtask reproduce` on the CPU: run_qa.py's recipe (its
prepare_train_features / prepare_validation_features, the transformers Trainer, utils_qa's
post-processing and the official SQuAD v1.1 metric) on the same slice and hyper-parameters as the
preset, for one seed. Prints one JSON object.

Python side: torch==2.15.0 transformers==4.57.6 tokenizers==0.22.2 "huggingface-hub<1.0".

Usage: python3 hf_run_qa.py --model DIR --train-file F --dev-file F --seed S [flags below]
"""
import argparse
import collections
import json
import re
import string
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, Trainer,
                          TrainingArguments, default_data_collator, set_seed)


def squad_examples(path, limit):
    """SQuAD JSON as run_qa's `datasets` rows, in file order, the first `limit`."""
    rows = []
    for article in json.load(open(path, encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                rows.append({
                    "id": str(qa["id"]),
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in qa["answers"]],
                                "answer_start": [a["answer_start"] for a in qa["answers"]]},
                })
    return rows[:limit] if limit else rows


def windows(examples, tokenizer, max_len, stride):
    """run_qa's tokenizer call: left-stripped questions, overflow windows padded to max length."""
    examples["question"] = [q.lstrip() for q in examples["question"]]
    return tokenizer(examples["question"], examples["context"], truncation="only_second",
                     max_length=max_len, stride=stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True, padding="max_length")


def prepare_train_features(examples, tokenizer, max_len, stride):
    """run_qa.py's prepare_train_features (pad to max length, its labelling included)."""
    enc = windows(examples, tokenizer, max_len, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(offsets_all):
        ids = enc["input_ids"][i]
        cls = ids.index(tokenizer.cls_token_id)
        seq = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        if len(answers["answer_start"]) == 0:
            enc["start_positions"].append(cls)
            enc["end_positions"].append(cls)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        ts = 0
        while seq[ts] != 1:
            ts += 1
        te = len(ids) - 1
        while seq[te] != 1:
            te -= 1
        if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
            enc["start_positions"].append(cls)
            enc["end_positions"].append(cls)
        else:
            while ts < len(offsets) and offsets[ts][0] <= start_char:
                ts += 1
            enc["start_positions"].append(ts - 1)
            while offsets[te][1] >= end_char:
                te -= 1
            enc["end_positions"].append(te + 1)
    return enc


def prepare_validation_features(examples, tokenizer, max_len, stride):
    enc = windows(examples, tokenizer, max_len, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [o if seq[k] == 1 else None
                                    for k, o in enumerate(enc["offset_mapping"][i])]
    return enc


def postprocess(examples, features, starts, ends, n_best=20, max_answer_len=30):
    """utils_qa.postprocess_qa_predictions for SQuAD v1.1 (best non-null span per example)."""
    by_example = collections.defaultdict(list)
    for i, f in enumerate(features):
        by_example[f["example_id"]].append(i)
    preds = {}
    for ex in examples:
        candidates = []
        for fi in by_example[ex["id"]]:
            s, e, offsets = starts[fi], ends[fi], features[fi]["offset_mapping"]
            for a in np.argsort(s)[-1:-n_best - 1:-1].tolist():
                for b in np.argsort(e)[-1:-n_best - 1:-1].tolist():
                    if (a >= len(offsets) or b >= len(offsets) or offsets[a] is None
                            or len(offsets[a]) < 2 or offsets[b] is None or len(offsets[b]) < 2):
                        continue
                    if b < a or b - a + 1 > max_answer_len:
                        continue
                    candidates.append((s[a] + e[b], offsets[a][0], offsets[b][1]))
        if candidates:
            _, c0, c1 = max(candidates, key=lambda c: c[0])
            preds[ex["id"]] = ex["context"][c0:c1]
        else:
            preds[ex["id"]] = ""
    return preds


def normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1(pred, gold):
    p, g = normalize(pred).split(), normalize(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train-file", required=True)
    ap.add_argument("--dev-file", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-train-samples", type=int)
    ap.add_argument("--max-eval-samples", type=int)
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--doc-stride", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--num-train-epochs", type=float, default=1.0)
    ap.add_argument("--train-windows", choices=["all", "with-answer"], default="all",
                    help="with-answer: train only on windows that hold their answer (qa train's flag)")
    args = ap.parse_args()

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_rows = squad_examples(args.train_file, args.max_train_samples)
    dev_rows = squad_examples(args.dev_file, args.max_eval_samples)
    train = Dataset.from_list(train_rows).map(
        lambda b: prepare_train_features(b, tokenizer, args.max_seq_length, args.doc_stride),
        batched=True, remove_columns=["id", "context", "question", "answers"])
    if args.train_windows == "with-answer":
        # The CLS label (index 0) marks a window without its answer.
        train = train.filter(lambda f: f["start_positions"] != 0)
    dev = Dataset.from_list(dev_rows).map(
        lambda b: prepare_validation_features(b, tokenizer, args.max_seq_length, args.doc_stride),
        batched=True, remove_columns=["id", "context", "question", "answers"])
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=32, learning_rate=args.learning_rate,
            weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
            num_train_epochs=args.num_train_epochs, seed=args.seed, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
            disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=train,
                          data_collator=default_data_collator)
        started = time.time()
        result = trainer.train()
        train_wall = time.time() - started
        features = dev.remove_columns(["example_id", "offset_mapping"])
        out_pred = trainer.predict(features)
    starts, ends = out_pred.predictions
    preds = postprocess(dev_rows, dev, starts, ends)
    em = np.mean([max(float(normalize(preds[r["id"]]) == normalize(t))
                      for t in r["answers"]["text"]) for r in dev_rows]) * 100
    f = np.mean([max(f1(preds[r["id"]], t) for t in r["answers"]["text"])
                 for r in dev_rows]) * 100
    print(json.dumps({
        "seed": args.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_windows": len(train),
        "eval_windows": len(dev),
        "train_runtime": result.metrics["train_runtime"],
        "train_wall": train_wall,
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "train_loss": result.metrics["train_loss"],
        "eval_exact_match": em,
        "eval_f1": f,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }))


if __name__ == "__main__":
    main()
