//! `cargo xtask bench`: one table, ours beside the peers measured in the same run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::{build_qa, repo_root, shared_dir};

#[derive(clap::Args)]
pub struct Args {
    /// Which part: features, model, or all; `serve` (only when named) load-tests `qa serve`;
    /// `precision` (only when named) times inference in f32, bf16 and int8 beside the CPU
    /// peers a user would pick (PyTorch bf16 autocast and dynamic int8, ONNX Runtime fp32 and
    /// dynamic int8 per channel); `scale` (only when named) measures the data stage at 10× and
    /// 30× COVID-QA with and without the windows cache, beside `datasets.map`.
    #[arg(default_value = "all", value_parser = ["all", "features", "model", "serve", "precision", "scale"])]
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

pub(crate) struct Row {
    pub what: String,
    pub ours: Option<f64>,
    pub peer: Option<f64>,
    pub peer_name: String,
    pub notes: String,
}

/// The soak: how long, how many requests at once, and the share of bad requests.
const SOAK_SECONDS: u64 = 60;
const SOAK_CONCURRENCY: usize = 64;
const SOAK_BAD_PERCENT: u32 = 10;

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in MiB.
pub(crate) fn status_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()?;
    Some(kib / 1024.0)
}

/// The last JSON line a child printed on stdout (its result; earlier lines are progress).
pub(crate) fn json_line(output: &std::process::Output) -> Option<serde_json::Value> {
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
    if args.what == "serve" {
        return serve_bench(&qa, &args);
    }
    if args.what == "scale" {
        let mut rows = Vec::new();
        let mut raw = Vec::new();
        crate::scale::scale_rows(
            &qa,
            args.quick,
            args.skip_peers,
            &args.out,
            &mut rows,
            &mut raw,
        )?;
        return write_table(&args, &rows, &raw);
    }
    if args.what == "precision" {
        let mut rows = Vec::new();
        let mut raw = Vec::new();
        precision_rows(&qa, &args, &mut rows, &mut raw)?;
        return write_table(&args, &rows, &raw);
    }
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
        // Enough timed steps to pass the allocator's warm-up (our first 2–3 steps fault in fresh
        // memory; PyTorch's caching allocator warms up too): steady-state rates on both sides.
        (false, false) => &[
            ("minilm", 4, 6, 4, 4),
            ("deberta-v3-minilm", 4, 4, 4, 3),
            ("bert-base", 2, 3, 2, 3),
        ],
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
                .args(["--launched-at", &unix_now()])
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
                        &unix_now(),
                    ])
                    .output()?;
                json_line(&o)
            } else {
                None
            };
            let notes = match &ours {
                Some(v) => model_notes(batch, v, peer.as_ref()),
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

/// Our precisions and the CPU peer each is compared with (PyTorch eager fp32 is the baseline
/// users leave; ONNX Runtime int8 is the one to beat).
const PRECISION_PAIRS: [(&str, &str); 5] = [
    ("f32", "torch-f32"),
    ("f32", "ort-f32"),
    ("bf16", "torch-bf16"),
    ("int8", "torch-int8"),
    ("int8", "ort-int8"),
];

/// `cargo xtask bench precision`: inference at seq 384 in each `--precision`, beside
/// `bench/peers/cpu_infer_peers.py`, one process each, one after the other, in the same run.
fn precision_rows(
    qa: &std::path::Path,
    args: &Args,
    rows: &mut Vec<Row>,
    raw: &mut Vec<serde_json::Value>,
) -> anyhow::Result<()> {
    let peers_installed = !args.skip_peers
        && ["torch", "transformers", "onnxruntime", "onnx"]
            .iter()
            .all(|m| python_has(m));
    if !args.skip_peers && !peers_installed {
        eprintln!(
            "peers not run: python3 lacks torch, transformers, onnxruntime or onnx \
             (pip install torch transformers==4.57.6 onnxruntime==1.31.1 onnx)"
        );
    }
    // (config, batch, timed steps)
    let sizes: &[(&str, usize, usize)] = if args.quick {
        &[("minilm", 2, 1)]
    } else {
        &[("minilm", 8, 4), ("bert-base", 8, 2)]
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for &(config, batch, steps) in sizes {
        let mut ours = std::collections::HashMap::new();
        for precision in ["f32", "bf16", "int8"] {
            let out = Command::new(qa)
                .args([
                    "bench",
                    "--workload",
                    "infer",
                    "--config",
                    config,
                    "--seq",
                    "384",
                ])
                .args(["--batch", &batch.to_string(), "--steps", &steps.to_string()])
                .args(["--precision", precision])
                .output()
                .context("running qa bench")?;
            let result = json_line(&out);
            if result.is_none() {
                eprintln!(
                    "qa bench infer {config} --precision {precision} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            raw.extend(result.clone());
            ours.insert(precision, result);
        }
        for (precision, peer_name) in PRECISION_PAIRS {
            let peer = if peers_installed {
                let o = Command::new("python3")
                    .arg(repo_root().join("bench/peers/cpu_infer_peers.py"))
                    .args([
                        peer_name,
                        config,
                        "384",
                        &batch.to_string(),
                        &steps.to_string(),
                    ])
                    .arg(threads.to_string())
                    .output()?;
                let result = json_line(&o);
                if result.is_none() {
                    eprintln!(
                        "peer {peer_name} {config} failed: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                result
            } else {
                None
            };
            let ours = ours[precision].as_ref();
            rows.push(Row {
                what: format!("infer {config} seq 384 {precision} windows/s"),
                ours: ours.and_then(|v| v["windows_per_second"].as_f64()),
                peer: peer.as_ref().and_then(|v| v["windows_per_second"].as_f64()),
                peer_name: peer
                    .as_ref()
                    .and_then(|v| v["peer"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{peer_name} (not run)")),
                notes: match ours {
                    Some(v) => model_notes(batch, v, peer.as_ref()),
                    None => "failed".into(),
                },
            });
            raw.extend(peer);
        }
    }
    Ok(())
}

/// Now, in Unix seconds: the launch time `qa bench --launched-at` and the PyTorch peer's last
/// argument take, so both time the first step from the moment a user would start waiting.
fn unix_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    format!("{:.6}", now.map_or(0.0, |d| d.as_secs_f64()))
}

/// A model row's notes: time to the first step (from launch, and from before the model is
/// built) and peak RSS, ours then the peer's.
fn model_notes(batch: usize, ours: &serde_json::Value, peer: Option<&serde_json::Value>) -> String {
    let figure = |v: Option<&serde_json::Value>, key: &str, unit: &str, digits: usize| {
        v.and_then(|v| v[key].as_f64())
            .map_or("–".to_string(), |x| format!("{x:.digits$}{unit}"))
    };
    let pair = |key: &str, unit: &str, digits: usize| {
        format!(
            "{} vs {}",
            figure(Some(ours), key, unit, digits),
            figure(peer, key, unit, digits)
        )
    };
    format!(
        "batch {batch}; first step from launch {}, from model build {}; peak RSS {}",
        pair("first_step_from_launch_s", " s", 1),
        pair("time_to_first_step_s", " s", 1),
        pair("peak_rss_mib", " MiB", 0),
    )
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

/// Whether a server is soaked after its load levels.
#[derive(Clone, Copy)]
enum Soak {
    Run,
    Skip,
}

/// `cargo xtask bench serve`: `qa serve` (MiniLM, no QA head: the answers are random, the
/// timing is real) under a loopback load at concurrency 1, 8 and 32, and the FastAPI + HF
/// pipeline peer (`bench/peers/serve_peer.py`) under the same load where its packages are
/// installed. The load generator is `crates/qa-serve/examples/load.rs` (tokio tasks, bounded
/// in requests and seconds); peak RSS is the server's VmHWM.
fn serve_bench(qa: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let shared = shared_dir();
    let model = shared.join("models/all-MiniLM-L6-v2");
    std::fs::create_dir_all(&args.out)?;
    let bodies = args.out.join("serve-requests.jsonl");
    // COVID-QA dev questions, each with the 1,000 characters of its article around the answer
    // (one window each): the paragraph-sized contexts a QA service is usually sent.
    let dev: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared.join("data/covid-qa/dev.json"))
            .context("reading COVID-QA dev")?,
    )?;
    let mut lines = String::new();
    for paragraph in dev["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["paragraphs"].as_array().into_iter().flatten())
    {
        let context: Vec<char> = paragraph["context"]
            .as_str()
            .unwrap_or("")
            .chars()
            .collect();
        for qa in paragraph["qas"].as_array().into_iter().flatten().take(10) {
            let at = qa["answers"][0]["answer_start"].as_u64().unwrap_or(0) as usize;
            let from = at.saturating_sub(400).min(context.len());
            let to = (from + 1000).min(context.len());
            let excerpt: String = context[from..to].iter().collect();
            let body = serde_json::json!({"question": qa["question"], "context": excerpt});
            lines.push_str(&format!("{body}\n"));
        }
    }
    std::fs::write(&bodies, lines)?;

    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(repo_root()).args([
        "build",
        "--release",
        "-p",
        "qa-serve",
        "--example",
        "load",
    ]);
    crate::run_checked(&mut cargo)?;
    let load = repo_root().join("target/release/examples/load");
    let (requests, seconds) = if args.quick { (60, 10) } else { (1000, 30) };
    let levels = [1usize, 8, 32];

    // Starts a server, waits for /health, loads it at each level (then soaks it, if asked),
    // stops it with SIGTERM.
    let measure = |name: &str,
                   server: &mut Command,
                   soak: Soak|
     -> anyhow::Result<serde_json::Value> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log_path = args.out.join(format!("{name}.log"));
        let mut child = server
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{name} exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .trim()
                );
            }
            let health = ureq::get(&format!("{base}/health"))
                .timeout(Duration::from_secs(2))
                .call();
            if health.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                anyhow::bail!("{name} was not ready after 300 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let ready_s = started.elapsed().as_secs_f64();
        // `qa serve`'s own count of windows per batch (sum, count); the peer has none.
        let passes = || -> Option<(f64, f64)> {
            let text = ureq::get(&format!("{base}/metrics"))
                .call()
                .ok()?
                .into_string()
                .ok()?;
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            };
            Some((
                value("qa_serve_batch_windows_sum")?,
                value("qa_serve_batch_windows_count")?,
            ))
        };
        // The server's CPU time (user + system), in seconds: a machine shared with other work
        // slows req/s, less so CPU time per request.
        let pid = child.id();
        let ticks_per_s = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(100.0);
        let cpu_s = || -> Option<f64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? + ticks(12)?) / ticks_per_s)
        };
        let load_command = |concurrency: usize, requests: usize, seconds: u64, warmup: usize| {
            let mut cmd = Command::new(&load);
            cmd.args(["--url", &format!("{base}/v1/answer"), "--bodies"])
                .arg(&bodies)
                .args(["--concurrency", &concurrency.to_string()])
                .args(["--requests", &requests.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .args(["--warmup", &warmup.to_string()]);
            cmd
        };
        let mut results = Vec::new();
        for concurrency in levels {
            let before = passes();
            let cpu_before = cpu_s();
            let out = load_command(concurrency, requests, seconds, concurrency.min(8))
                .output()
                .context("running the load generator")?;
            match json_line(&out) {
                Some(mut v) => {
                    let ok = v["ok"].as_f64().unwrap_or(0.0);
                    if let (Some(c0), Some(c1)) = (cpu_before, cpu_s()) {
                        if ok > 0.0 {
                            v["server_cpu_ms_per_request"] =
                                serde_json::json!((c1 - c0) * 1e3 / ok);
                        }
                    }
                    if let (Some((w0, n0)), Some((w1, n1))) = (before, passes()) {
                        if n1 > n0 {
                            v["windows_per_pass"] = serde_json::json!((w1 - w0) / (n1 - n0));
                        }
                    }
                    results.push(v)
                }
                None => eprintln!(
                    "load generator failed at concurrency {concurrency}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        }
        let soak_result = match soak {
            Soak::Skip => serde_json::Value::Null,
            Soak::Run => {
                // Every answer checked; the server's resident memory sampled each second.
                let mut generator = load_command(SOAK_CONCURRENCY, 1_000_000, SOAK_SECONDS, 8)
                    .args(["--bad-percent", &SOAK_BAD_PERCENT.to_string(), "--check"])
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("running the soak")?;
                let mut rss_mib = Vec::new();
                while generator.try_wait()?.is_none() {
                    rss_mib.extend(status_mib(pid, "VmRSS:"));
                    std::thread::sleep(Duration::from_secs(1));
                }
                let out = generator.wait_with_output()?;
                let Some(mut v) = json_line(&out).filter(|_| out.status.success()) else {
                    anyhow::bail!(
                        "the soak's load generator failed ({}); its messages are above",
                        out.status
                    );
                };
                // Samples from the start of the load on (the reference answers come first).
                let skip = v["load_started_after_s"].as_f64().unwrap_or(0.0).ceil() as usize;
                v["rss_mib_each_second"] = serde_json::json!(rss_mib.get(skip..).unwrap_or(&[]));
                v
            }
        };
        let peak_rss_mib = status_mib(pid, "VmHWM:");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let stop_started = Instant::now();
        let exit = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if stop_started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(serde_json::json!({
            "server": name,
            "ready_s": ready_s,
            "peak_rss_mib": peak_rss_mib,
            "sigterm_exit": exit.map(|s| s.to_string()).unwrap_or_else(|| "killed after 30 s".into()),
            "levels": results,
            "soak": soak_result,
        }))
    };

    let mut runs = Vec::new();
    let mut ours = Command::new(qa);
    ours.arg("serve").arg("--model").arg(&model);
    let soak = if args.quick { Soak::Skip } else { Soak::Run };
    runs.push(measure("qa-serve", &mut ours, soak)?);
    // The same server answering in int8 (`--precision int8`): its rate against f32's above.
    let mut int8 = Command::new(qa);
    int8.arg("serve")
        .arg("--model")
        .arg(&model)
        .args(["--precision", "int8"]);
    runs.push(measure("qa-serve --precision int8", &mut int8, Soak::Skip)?);
    if !args.quick {
        // Dynamic batching off: one window per forward pass.
        let mut unbatched = Command::new(qa);
        unbatched
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .args(["--max-batch-windows", "1"]);
        runs.push(measure(
            "qa-serve --max-batch-windows 1",
            &mut unbatched,
            Soak::Skip,
        )?);
        // Batches in one forward pass each, padded to their longest window.
        let mut one_pass = Command::new(qa);
        one_pass
            .arg("serve")
            .arg("--model")
            .arg(&model)
            .args(["--max-padding", "1"]);
        runs.push(measure(
            "qa-serve --max-padding 1",
            &mut one_pass,
            Soak::Skip,
        )?);
    }

    let missing: Vec<&str> = ["torch", "transformers", "fastapi", "uvicorn"]
        .into_iter()
        .filter(|m| !python_has(m))
        .collect();
    let peer_note = if args.skip_peers {
        "peer skipped (--skip-peers)".to_string()
    } else if !missing.is_empty() {
        let note = format!(
            "peer not run: python3 lacks {} (pip install torch 'transformers<5' fastapi uvicorn)",
            missing.join(", ")
        );
        eprintln!("{note}");
        note
    } else {
        let mut peer = Command::new("python3");
        peer.arg(repo_root().join("bench/peers/serve_peer.py"))
            .arg("--model")
            .arg(&model);
        match measure("fastapi-hf-pipeline", &mut peer, Soak::Skip) {
            Ok(run) => {
                runs.push(run);
                "peer: FastAPI + uvicorn + HF pipeline, one request at a time".to_string()
            }
            Err(e) => format!("peer failed: {e:#}"),
        }
    };

    let fmt = |v: &serde_json::Value| v.as_f64().map_or("–".into(), |v| format!("{v:.1}"));
    let mut md = format!(
        "# qa serve under load ({} backend)\n\n\
         MiniLM-L6 (no QA head), COVID-QA dev questions with 1,000-character contexts (one window \
         each), default `qa serve` flags; {requests} requests or {seconds} s per level, whichever \
         comes first.\n\n\
         | server | concurrency | requests | req/s | p50 ms | p99 ms | failed | server CPU ms/request | windows/batch | peak RSS MiB | ready after | SIGTERM exit |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        if cfg!(feature = "cuda") { "cuda" } else { "cpu (ndarray)" }
    );
    for run in &runs {
        for level in run["levels"].as_array().into_iter().flatten() {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |\n",
                run["server"].as_str().unwrap_or("?"),
                level["concurrency"],
                level["ok"],
                fmt(&level["requests_per_second"]),
                fmt(&level["p50_ms"]),
                fmt(&level["p99_ms"]),
                level["failed"],
                fmt(&level["server_cpu_ms_per_request"]),
                fmt(&level["windows_per_pass"]),
                fmt(&run["peak_rss_mib"]),
                run["ready_s"].as_f64().unwrap_or(0.0),
                run["sigterm_exit"].as_str().unwrap_or("?"),
            ));
        }
    }
    md.push_str(&format!("\n{peer_note}\n"));
    for run in runs.iter().filter(|r| !r["soak"].is_null()) {
        let soak = &run["soak"];
        let rss: Vec<f64> = soak["rss_mib_each_second"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_f64())
            .collect();
        let at = |i: usize| rss.get(i).map_or("–".into(), |v| format!("{v:.0}"));
        md.push_str(&format!(
            "\nSoak of {}: {SOAK_SECONDS} s at concurrency {SOAK_CONCURRENCY}, \
             {SOAK_BAD_PERCENT}% bad requests, every answer checked against the body's answer \
             alone: {} answered, {} wrong answers, {} bad requests rejected as \
             they must be, {} bad requests answered otherwise, {} 503 (backpressure), {} other \
             5xx, {} failed; p50/p99 {}/{} ms; RSS {} MiB 10 s into the load, {} MiB at 30 s, {} \
             MiB at the end.\n",
            run["server"].as_str().unwrap_or("?"),
            soak["ok"],
            soak["wrong_answers"],
            soak["bad_rejected"],
            soak["bad_misanswered"],
            soak["backpressure_503"],
            soak["server_errors_5xx"],
            soak["failed"],
            fmt(&soak["p50_ms"]),
            fmt(&soak["p99_ms"]),
            at(9),
            at(29),
            rss.last().map_or("–".into(), |v| format!("{v:.0}")),
        ));
    }
    std::fs::write(args.out.join("serve.md"), &md)?;
    std::fs::write(
        args.out.join("serve.json"),
        serde_json::to_string_pretty(&runs)? + "\n",
    )?;
    println!("{md}");
    Ok(())
}
