"""Loads a model folder with Hugging Face transformers and answers questions with its
question-answering pipeline, in `qa predict --input` output format: checks that folders saved
by `qa train` load unchanged (no missing or unexpected tensors) and answer as `qa predict` does.

Usage: python3 hf_pipeline.py MODEL_DIR QUESTIONS.jsonl [top_k]   (transformers < 5: 5.x has no QA pipeline)
"""
import json
import sys

from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline

model_dir, questions = sys.argv[1], sys.argv[2]
top_k = int(sys.argv[3]) if len(sys.argv) > 3 else 1
model, info = AutoModelForQuestionAnswering.from_pretrained(model_dir, output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
print(json.dumps({"model": model_dir, "architecture": type(model).__name__, "loading_problems": problems}),
      file=sys.stderr)
qa = pipeline("question-answering", model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), device=-1)
for line in open(questions):
    x = json.loads(line)
    out = qa(question=x["question"], context=x["context"], top_k=top_k)
    print(json.dumps({"id": x.get("id"), "answers": out if isinstance(out, list) else [out]}))
sys.exit(1 if problems else 0)
