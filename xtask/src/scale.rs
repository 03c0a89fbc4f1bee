//! `cargo xtask bench scale`: the data stage at scale. COVID-QA's train split repeated 10× and
//! 30× (each copy of an article gets new question ids and its own context), then for each:
//! `qa train` without the windows cache (today's in-memory path), with an empty cache (windows
//! cut straight into it) and again (read from it) — data-stage seconds, peak RSS, cache bytes,
//! and a short training slice — and a whole `qa eval` of the data (the tiny golden model, so
//! the run stays bounded) for its peak RSS, and on 10× that evaluation inside `qa train`. On 10×, HF `datasets.map` with run_qa's
//! `prepare_train_features` is the peer, twice with one Arrow cache (`bench/peers/datasets_map.py`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bench::{status_mib, Row};
use crate::{repo_root, shared_dir};

/// A finished child: wall seconds, peak RSS (the last `VmHWM` seen while it ran) and stderr.
struct Measured {
    seconds: f64,
    peak_mib: Option<f64>,
    stderr: String,
    stdout: String,
    success: bool,
}

/// Runs `command`, polling its high-water RSS every 20 ms (VmHWM only grows, so the last
/// reading misses at most the final 20 ms); its output goes to `logs` (the last run's is kept).
fn measure(mut command: Command, logs: &Path) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(logs)?;
    let (out_path, err_path) = (logs.join("stdout"), logs.join("stderr"));
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .context("starting a benchmark child")?;
    let mut peak = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(hwm) = status_mib(child.id(), "VmHWM:") {
            peak = Some(hwm);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Measured {
        seconds: started.elapsed().as_secs_f64(),
        peak_mib: peak,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        success: status.success(),
    })
}

/// `line` without terminal colour codes (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// The last JSON line of a child's stdout (its result).
fn last_json(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// The seconds `qa` logged for its data stage ("data ready in X s").
fn data_seconds(stderr: &str) -> Option<f64> {
    let at = stderr.rfind("data ready in ")? + "data ready in ".len();
    stderr[at..].split_whitespace().next()?.parse().ok()
}

/// COVID-QA's train split `times` over: each copy of an article has its own context (a suffix)
/// and question ids, so nothing is shared between copies.
fn repeat_covid(times: usize, out: &Path) -> anyhow::Result<()> {
    let source = shared_dir().join("data/covid-qa/train.json");
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&source)?)?;
    let articles = data["data"].as_array().context("COVID-QA: no data")?;
    let mut repeated = Vec::new();
    for copy in 0..times {
        for article in articles {
            let mut article = article.clone();
            for paragraph in article["paragraphs"].as_array_mut().into_iter().flatten() {
                let context = paragraph["context"].as_str().unwrap_or_default();
                paragraph["context"] = format!("{context} (copy {copy})").into();
                for qa in paragraph["qas"].as_array_mut().into_iter().flatten() {
                    let id = qa["id"].to_string().trim_matches('"').to_string();
                    qa["id"] = format!("{id}-copy{copy}").into();
                }
            }
            repeated.push(article);
        }
    }
    let out_json = serde_json::json!({"version": data["version"], "data": repeated});
    std::fs::write(out, serde_json::to_vec(&out_json)?)?;
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn mib(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.0} MiB"))
}

pub(crate) fn scale_rows(
    qa: &Path,
    quick: bool,
    skip_peers: bool,
    out: &Path,
    rows: &mut Vec<Row>,
    raw: &mut Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let work = out.join("scale");
    let logs = work.join("logs");
    std::fs::create_dir_all(&work)?;
    let minilm = shared_dir().join("models/all-MiniLM-L6-v2");
    let tiny = shared_dir().join("golden/tiny-bert-qa");
    let sizes: &[usize] = if quick { &[1] } else { &[10, 30] };
    for &times in sizes {
        let data = work.join(format!("covid-{times}x.json"));
        repeat_covid(times, &data)?;
        let cache = work.join(format!("cache-{times}x"));
        let _ = std::fs::remove_dir_all(&cache);
        // `steps` optimizer steps of `batch` windows; the data stage's figures come from runs of
        // one step of one window (the model and that step are all they add to it).
        let train = |steps: &str, batch: &str, cache_flags: &[&str]| {
            let mut command = Command::new(qa);
            command
                .arg("train")
                .arg("--model-name-or-path")
                .arg(&minilm)
                .arg("--train-file")
                .arg(&data)
                .args(["--max-steps", steps, "--per-device-train-batch-size", batch])
                .args(["--save-strategy", "no", "--output-dir"])
                .arg(work.join("train-out"))
                .args(cache_flags);
            measure(command, &logs)
        };
        let cache_dir = cache.display().to_string();
        let cached = ["--cache-dir", cache_dir.as_str()];
        let runs = [
            (
                "without the cache (in memory)",
                train("1", "1", &["--no-cache"])?,
            ),
            ("first, cut into the cache", train("1", "1", &cached)?),
            ("second, read from the cache", train("1", "1", &cached)?),
        ];
        let slice = train("8", "8", &cached)?;
        let windows = runs[1]
            .1
            .stderr
            .lines()
            .find(|l| l.contains("windows from"))
            .unwrap_or("")
            .to_string();
        let disk = dir_bytes(&cache);
        let mut eval = Command::new(qa);
        eval.arg("eval")
            .arg("--model")
            .arg(&tiny)
            .arg("--data")
            .arg(&data)
            .args(["--batch-size", "64", "--cache-dir", &cache_dir])
            .arg("--output-dir")
            .arg(work.join("eval-out"));
        let eval = measure(eval, &logs)?;
        // Evaluation inside `qa train` (its end-of-run evaluation of --validation-file) streams
        // as `qa eval` does; on 10× only, as a whole evaluation of 30× takes a quarter hour.
        let in_loop = if times <= 10 {
            let mut command = Command::new(qa);
            command
                .arg("train")
                .arg("--model-name-or-path")
                .arg(&tiny)
                .arg("--train-file")
                .arg(&data)
                .arg("--validation-file")
                .arg(&data)
                .args(["--max-steps", "1", "--per-device-train-batch-size", "1"])
                .args([
                    "--per-device-eval-batch-size",
                    "64",
                    "--save-strategy",
                    "no",
                ])
                .args(["--cache-dir", &cache_dir, "--output-dir"])
                .arg(work.join("train-eval-out"));
            Some(measure(command, &logs)?)
        } else {
            None
        };
        // The peer runs on 10×, as the benchmark is designed (run_qa's data stage beside ours).
        let peer = if times <= 10 && !skip_peers {
            let arrow = work.join(format!("datasets-cache-{times}x"));
            let _ = std::fs::remove_dir_all(&arrow);
            let mut results = Vec::new();
            for _ in 0..2 {
                let mut command = Command::new("python3");
                command
                    .arg(repo_root().join("bench/peers/datasets_map.py"))
                    .arg(&data)
                    .arg(&minilm)
                    .arg(&arrow);
                let run = measure(command, &logs)?;
                results.push(last_json(&run.stdout));
            }
            results
        } else {
            Vec::new()
        };
        let peer_figure = |i: usize, key: &str| {
            peer.get(i)
                .and_then(Option::as_ref)
                .and_then(|v| v[key].as_f64())
        };
        let peer_name = if peer.is_empty() {
            "–".to_string()
        } else {
            "datasets .map (run_qa)".to_string()
        };
        for (i, (name, run)) in runs.iter().enumerate() {
            let peer_index = match i {
                1 => Some(0),
                2 => Some(1),
                _ => None,
            };
            let trained = run
                .stderr
                .lines()
                .find(|l| l.starts_with("trained "))
                .unwrap_or(if run.success { "" } else { "failed" });
            rows.push(Row {
                what: format!("data stage {times}× COVID-QA, {name}: seconds"),
                ours: data_seconds(&run.stderr),
                peer: peer_index.and_then(|p| peer_figure(p, "seconds")),
                peer_name: peer_name.clone(),
                notes: format!(
                    "peak RSS (data, model and one step of one window) {} vs {} (data stage); \
                     {trained}",
                    mib(run.peak_mib),
                    mib(peer_index.and_then(|p| peer_figure(p, "peak_rss_mib"))),
                ),
            });
            raw.push(serde_json::json!({
                "scale": times, "run": name, "data_seconds": data_seconds(&run.stderr),
                "wall_seconds": run.seconds, "peak_rss_mib": run.peak_mib, "success": run.success,
            }));
        }
        let first = data_seconds(&runs[1].1.stderr);
        let second = data_seconds(&runs[2].1.stderr);
        rows.push(Row {
            what: format!("data stage {times}×: first run ÷ second run"),
            ours: first.zip(second).map(|(a, b)| a / b.max(1e-9)),
            peer: peer_figure(0, "seconds")
                .zip(peer_figure(1, "seconds"))
                .map(|(a, b)| a / b.max(1e-9)),
            peer_name: peer_name.clone(),
            notes: format!(
                "cache on disk {:.0} MB vs {}; {}",
                disk as f64 / 1e6,
                peer_figure(0, "cache_bytes")
                    .map_or("–".into(), |b| format!("{:.0} MB", b / 1e6)),
                without_colours(&windows)
            ),
        });
        let slice_rate = slice
            .stderr
            .lines()
            .find(|l| l.starts_with("trained "))
            .and_then(|l| l.split(", ").find(|part| part.ends_with(" windows/s")))
            .and_then(|part| part.trim_end_matches(" windows/s").parse().ok());
        rows.push(Row {
            what: format!("training slice {times}× from the cache (8 steps of 8): windows/s"),
            ours: slice_rate,
            peer: None,
            peer_name: "–".into(),
            notes: format!(
                "peak RSS {}{}",
                mib(slice.peak_mib),
                if slice.success { "" } else { "; FAILED" }
            ),
        });
        rows.push(Row {
            what: format!("qa eval {times}× (whole, tiny model): peak RSS MiB"),
            ours: eval.peak_mib,
            peer: None,
            peer_name: "–".into(),
            notes: format!(
                "{:.0} s in all; windows from the cache, predicted and decoded 1,024 at a time{}",
                eval.seconds,
                if eval.success { "" } else { "; FAILED" }
            ),
        });
        if let Some(run) = &in_loop {
            rows.push(Row {
                what: format!(
                    "qa train --validation-file {times}× (tiny model, one step, the evaluation \
                     at the end): peak RSS MiB"
                ),
                ours: run.peak_mib,
                peer: None,
                peer_name: "–".into(),
                notes: format!(
                    "{:.0} s in all; evaluation windows from the cache, 1,024 at a time{}",
                    run.seconds,
                    if run.success { "" } else { "; FAILED" }
                ),
            });
            raw.push(serde_json::json!({
                "scale": times, "run": "train with evaluation", "wall_seconds": run.seconds,
                "peak_rss_mib": run.peak_mib, "success": run.success,
            }));
        }
        raw.push(serde_json::json!({
            "scale": times, "run": "eval", "wall_seconds": eval.seconds,
            "peak_rss_mib": eval.peak_mib, "success": eval.success, "cache_bytes": disk,
            "peer": peer,
        }));
    }
    Ok(())
}
