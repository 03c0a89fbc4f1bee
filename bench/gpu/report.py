"""Collects what bench/gpu/run.sh's stages wrote into one JSON and one Markdown table.

Usage: python3 report.py WORK_DIR PREFIX
       python3 report.py merge PREFIX PART.json...
The first form reads WORK_DIR/stages.txt, WORK_DIR/<stage>.log, WORK_DIR/device.txt and
WORK_DIR/recipe/ and writes PREFIX.json and PREFIX.md; run.sh runs it after every stage, so that
a run cut short still reports what finished. The second joins the two device commands' reports
(bench/results/gpu-h200 as PREFIX). Figures are only ever read from what the programs printed:
nothing here is estimated.
"""
import json
import os
import re
import sys

# With --nocapture a test's own output lands between "test NAME ... " and its outcome.
TEST_LINE = re.compile(r"^test (\S+) \.\.\. ?(.*)$")
OUTCOMES = ("ok", "FAILED", "ignored")
STAGE_LINE = re.compile(r"^(\S+) rc=(\d+) (\d+)s peak_gpu_mib=(\S+)")
BOILERPLATE = ("running ", "test result", "successes:", "failures:", "---- ")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def stages(work):
    found = {}
    for line in (read(os.path.join(work, "stages.txt")) or "").splitlines():
        m = STAGE_LINE.match(line)
        if m:
            peak = m.group(4)
            found[m.group(1)] = {
                "exit_code": int(m.group(2)),
                "seconds": int(m.group(3)),
                "peak_gpu_mib": int(peak) if peak.isdigit() else None,
            }
    return found


def tests(log):
    """Each test's outcome and the measurements the tests printed."""
    outcomes, measured, pending = {}, [], None
    for line in log.splitlines():
        m = TEST_LINE.match(line)
        text = m.group(2) if m else line.strip()
        if m:
            pending = m.group(1)
        if text in OUTCOMES and pending:
            outcomes[pending], pending = text, None
        elif text and not text.startswith(BOILERPLATE) and len(measured) < 40:
            measured.append(text)
    for name in [pending] if pending else []:
        outcomes[name] = "did not finish"
    return {"tests": outcomes, "printed": measured}


def json_lines(log):
    found = []
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return found


def recipe(work):
    folder = os.path.join(work, "recipe")
    log = read(os.path.join(folder, "train_log.jsonl")) or ""
    entries = [json.loads(l) for l in log.splitlines() if l.strip().startswith("{")]
    evals = [
        {k: e[k] for k in ("epoch", "step", "eval_exact_match", "eval_f1") if k in e}
        for e in entries
        if "eval_f1" in e
    ]
    results = {}
    for name in ("train_results.json", "eval_results.json"):
        text = read(os.path.join(folder, name))
        if text:
            results[name[: -len(".json")]] = json.loads(text)
    return {"evaluations": evals, **results, "logged_steps": len(entries) - len(evals)}


def write(report, prefix):
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(prefix + ".md", "w") as f:
        f.write(markdown(report))


def merge(prefix, parts):
    report = {"device": [], "stages": {}}
    for part in parts:
        with open(part) as f:
            one = json.load(f)
        report["device"] += [d for d in one.pop("device") if d not in report["device"]]
        report["stages"].update(one.pop("stages"))
        report.update(one)
    write(report, prefix)


def main(work, prefix):
    device = (read(os.path.join(work, "device.txt")) or "").splitlines()
    ran = stages(work)
    report = {"device": device, "stages": ran}
    for name in ran:
        log = read(os.path.join(work, name + ".log")) or ""
        if name.startswith("parity"):
            report[name] = tests(log)
        elif name.startswith(("qa_", "torch_")):
            report[name] = json_lines(log)
        elif name == "recipe":
            report[name] = recipe(work)
    write(report, prefix)


def markdown(report):
    lines = ["# GPU measurements (bench/gpu/run.sh)", ""]
    lines += [f"- {d}" for d in report["device"]] + [""]
    lines += ["| stage | exit | seconds | peak GPU MiB |", "|---|---|---|---|"]
    for name, s in report["stages"].items():
        lines.append(f"| {name} | {s['exit_code']} | {s['seconds']} | {s['peak_gpu_mib']} |")
    for name in ("parity_forward", "parity_training", "parity_minilm"):
        if name in report:
            lines += ["", f"## {name}", ""]
            lines += [f"- `{t}`: {r}" for t, r in report[name]["tests"].items()]
            lines += [f"- {p}" for p in report[name]["printed"]]
    speed = [(n, r[0]) for n, r in report.items() if n.startswith(("qa_", "torch_")) and r]
    if speed:
        lines += ["", "## Speed", "",
                  "| run | windows/s | first step (s) | peak GPU MiB |", "|---|---|---|---|"]
        for name, r in speed:
            first = r.get("time_to_first_step_s")
            peak = report["stages"].get(name, {}).get("peak_gpu_mib")
            lines.append(f"| {name} | {r.get('windows_per_second', 0):.1f} | "
                         f"{'' if first is None else f'{first:.2f}'} | {peak} |")
    if "recipe" in report:
        r = report["recipe"]
        precision = (r.get("train_results") or {}).get("precision", "as run")
        lines += ["", f"## Recipe (COVID-QA, batch 32, lr 5e-5, {precision})", ""]
        for e in r["evaluations"]:
            lines.append(f"- epoch {e.get('epoch')}: EM {e.get('eval_exact_match')}, "
                         f"F1 {e.get('eval_f1')}")
        t = r.get("train_results")
        if t:
            lines.append(f"- {t['train_samples_per_second']:.1f} windows/s, first step "
                         f"{t['time_to_first_step']:.1f} s, {t['epoch']} epochs")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2])
