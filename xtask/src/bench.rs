//! `cargo xtask bench`: one table, ours beside the peers measured in the same run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::{build_qa, repo_root, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Which part: features, model, or all.
    #[arg(default_value = "all", value_parser = ["all", "features", "model"])]
    what: String,
    /// Skip the Python peers (PyTorch, Python tokenizers).
    #[arg(long)]
    skip_peers: bool,
    /// Fewer and smaller workloads (a quick look).
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
}

struct Row {
    what: String,
    ours: Option<f64>,
    peer: Option<f64>,
    peer_name: String,
    notes: String,
}

fn json_line(output: &std::process::Output) -> Option<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let qa = build_qa()?;
    let mut rows = Vec::new();
    let mut raw = Vec::new();

    if args.what != "model" {
        features_row(&qa, &args, &mut rows, &mut raw)?;
    }
    if args.what != "features" {
        model_rows(&qa, &args, &mut rows, &mut raw)?;
    }
    write_table(&args, &rows, &raw)
}

/// Feature building: one core each, ours vs Python tokenizers doing run_qa's work.
fn features_row(
    qa: &std::path::Path,
    args: &Args,
    rows: &mut Vec<Row>,
    raw: &mut Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let shared = shared_dir();
    let minilm = shared.join("models/all-MiniLM-L6-v2");
    let covid_train = shared.join("data/covid-qa/train.json");
    let feat_out = std::env::temp_dir().join("qa-bench-features.jsonl");
    let started = std::time::Instant::now();
    let ours = Command::new(qa)
        .args(["features", "--data"])
        .arg(&covid_train)
        .arg("--tokenizer")
        .arg(&minilm)
        .arg("--out")
        .arg(&feat_out)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .context("running qa features")?;
    let ours_secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&ours.stderr);
    let ours_rate = stderr
        .split(" windows/s")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.trim().parse::<f64>().ok());
    let _ = std::fs::remove_file(&feat_out);
    let (peer_rate, peer_name, peer_note) = if !args.skip_peers && python_has("tokenizers") {
        let out = Command::new("python3")
            .arg(repo_root().join("bench/peers/features.py"))
            .arg(&covid_train)
            .arg(minilm.join("tokenizer.json"))
            .env("RAYON_NUM_THREADS", "1")
            .env("TOKENIZERS_PARALLELISM", "false")
            .output()?;
        match json_line(&out) {
            Some(v) => {
                raw.push(v.clone());
                (
                    v["windows_per_second"].as_f64(),
                    v["peer"].as_str().unwrap_or("python").to_string(),
                    format!("peer made {} windows", v["windows"]),
                )
            }
            None => (
                None,
                "python tokenizers".into(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            ),
        }
    } else {
        (
            None,
            "python tokenizers".into(),
            "not installed (pip install tokenizers==0.22.2)".into(),
        )
    };
    rows.push(Row {
        what: "features, COVID-QA train (34,717 windows), 1 core".into(),
        ours: ours_rate,
        peer: peer_rate,
        peer_name,
        notes: format!("qa features total wall {ours_secs:.1}s incl. JSONL writing; {peer_note}"),
    });
    Ok(())
}

/// Training and inference at seq 384, with the PyTorch peer where it is installed.
fn model_rows(
    qa: &std::path::Path,
    args: &Args,
    rows: &mut Vec<Row>,
    raw: &mut Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let gpu = cfg!(feature = "cuda");
    let torch = !args.skip_peers && python_has("torch") && python_has("transformers");
    let sizes: &[(&str, usize, usize, usize, usize)] = match (gpu, args.quick) {
        // (config, infer batch, infer steps, train batch, train steps)
        (true, _) => &[("minilm", 64, 20, 32, 10), ("bert-base", 32, 10, 32, 5)],
        (false, true) => &[("minilm", 2, 1, 2, 1)],
        (false, false) => &[("minilm", 4, 2, 4, 2), ("bert-base", 2, 1, 2, 1)],
    };
    for &(config, ib, is, tb, ts) in sizes {
        for (workload, batch, steps) in [("infer", ib, is), ("train", tb, ts)] {
            let out = Command::new(qa)
                .args([
                    "bench",
                    "--workload",
                    workload,
                    "--config",
                    config,
                    "--seq",
                    "384",
                ])
                .args(["--batch", &batch.to_string(), "--steps", &steps.to_string()])
                .output()
                .context("running qa bench")?;
            let ours = json_line(&out);
            if ours.is_none() {
                eprintln!(
                    "qa bench {workload} {config} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let peer = if torch {
                let o = Command::new("python3")
                    .arg(repo_root().join("bench/peers/torch_bench.py"))
                    .args([
                        workload,
                        config,
                        "384",
                        &batch.to_string(),
                        &steps.to_string(),
                    ])
                    .output()?;
                json_line(&o)
            } else {
                None
            };
            let notes = match &ours {
                Some(v) => format!(
                    "batch {batch}; first step {:.1}s; peak RSS {:.0} MiB{}",
                    v["time_to_first_step_s"].as_f64().unwrap_or(0.0),
                    v["peak_rss_mib"].as_f64().unwrap_or(0.0),
                    peer.as_ref()
                        .and_then(|p| p["time_to_first_step_s"].as_f64())
                        .map(|t| format!("; peer first step {t:.1}s"))
                        .unwrap_or_default()
                ),
                None => "failed".into(),
            };
            rows.push(Row {
                what: format!("{workload} {config} seq 384 windows/s"),
                ours: ours.as_ref().and_then(|v| v["windows_per_second"].as_f64()),
                peer: peer.as_ref().and_then(|v| v["windows_per_second"].as_f64()),
                peer_name: peer
                    .as_ref()
                    .and_then(|v| v["peer"].as_str().map(str::to_string))
                    .unwrap_or_else(|| {
                        if torch {
                            "pytorch (failed)".into()
                        } else {
                            "pytorch not installed".into()
                        }
                    }),
                notes,
            });
            raw.extend(ours);
            raw.extend(peer);
        }
    }
    Ok(())
}

fn write_table(args: &Args, rows: &[Row], raw: &[serde_json::Value]) -> anyhow::Result<()> {
    let gpu = cfg!(feature = "cuda");
    let fmt = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
    let mut md = format!(
        "# qa benchmarks ({} backend)\n\n| workload | qa | peer | peer | qa / peer | notes |\n|---|---|---|---|---|---|\n",
        if gpu { "cuda" } else { "cpu (ndarray)" }
    );
    for r in rows {
        let ratio = match (r.ours, r.peer) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "–".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.what,
            fmt(r.ours),
            fmt(r.peer),
            r.peer_name,
            ratio,
            r.notes
        ));
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("bench.md"), &md)?;
    std::fs::write(
        args.out.join("bench.json"),
        serde_json::to_string_pretty(&raw)? + "\n",
    )?;
    println!("{md}");
    Ok(())
}
