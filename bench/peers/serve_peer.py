"""The Python peer of `cargo xtask bench serve`: the same HTTP interface as `qa serve`
(`POST /v1/answer`, `GET /health`) with FastAPI + uvicorn and the Hugging Face
question-answering pipeline, as a team would write it without `qa`. The pipeline answers one
request at a time (a lock: PyTorch already uses every core for one forward pass, and the
pipeline batches nothing across requests).

Usage: python3 serve_peer.py --model DIR [--host 127.0.0.1] [--port 8081]
           [--max-seq-length 384] [--doc-stride 128] [--max-answer-length 15]
Needs: torch, transformers < 5 (5.x has no QA pipeline), fastapi, uvicorn.
Exits with status 3 and names the missing packages when any is not installed.
"""
import argparse
import importlib.util
import json
import sys
import threading

NEEDED = ("torch", "transformers", "fastapi", "uvicorn")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--max-seq-length", type=int, default=384)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--max-answer-length", type=int, default=15)
    args = parser.parse_args()

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(json.dumps({"error": "missing python packages", "missing": missing}), file=sys.stderr)
        sys.exit(3)

    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from transformers import pipeline

    qa = pipeline("question-answering", model=args.model, tokenizer=args.model, device=-1)
    lock = threading.Lock()
    app = FastAPI()

    def answer_one(question, context, options):
        with lock:
            return qa(
                question=question,
                context=context,
                top_k=options.get("top_k", 1),
                handle_impossible_answer=options.get("handle_impossible_answer", False),
                max_answer_len=options.get("max_answer_len", args.max_answer_length),
                max_seq_len=args.max_seq_length,
                doc_stride=args.doc_stride,
            )

    @app.get("/health")
    def health():
        return {"status": "ready"}

    # A plain `def`: FastAPI runs it on its thread pool, so the event loop never blocks.
    @app.post("/v1/answer")
    def answer(body: dict):
        options = {**body.get("parameters", {}), **{k: v for k, v in body.items()
                                                     if k in ("top_k", "max_answer_len",
                                                              "handle_impossible_answer")}}
        inputs = body.get("inputs")
        try:
            if isinstance(inputs, list):
                return [answer_one(x["question"], x["context"], options) for x in inputs]
            pair = inputs if isinstance(inputs, dict) else body
            return answer_one(pair["question"], pair["context"], options)
        except (KeyError, TypeError) as e:
            return JSONResponse(status_code=400, content={"error": f"missing field {e}"})

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
