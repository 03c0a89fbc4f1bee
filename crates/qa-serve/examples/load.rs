//! The load generator of `cargo xtask bench serve`: `concurrency` tokio tasks POST request
//! bodies (JSON Lines, used in turn) to a QA server until `requests` are sent or `seconds` have
//! passed, and print one JSON line: requests/s, p50/p99 latency, failures. Loopback only.
//!
//! ```text
//! load --url http://127.0.0.1:8080/v1/answer --bodies requests.jsonl --concurrency 8 \
//!      --requests 400 --seconds 20 [--warmup 8]
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    url: String,
    bodies: Vec<String>,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    warmup: usize,
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Result<String, String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("missing {name}"))
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match value(name) {
            Ok(v) => v.parse().map_err(|e| format!("{name} {v}: {e}")),
            Err(_) => Ok(default),
        }
    };
    let url = value("--url")?;
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split([':', '/']).next())
        .unwrap_or("");
    if !["127.0.0.1", "localhost", "[::1]"].contains(&host) {
        return Err(format!("{url}: the load generator only targets loopback"));
    }
    let path = value("--bodies")?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let bodies: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if bodies.is_empty() {
        return Err(format!("{path}: no request bodies"));
    }
    Ok(Options {
        url,
        bodies,
        concurrency: number("--concurrency", 1)?.max(1),
        requests: number("--requests", 100)?,
        seconds: number("--seconds", 30)? as f64,
        warmup: number("--warmup", 0)?,
    })
}

/// Sends requests until `requests` are taken or `deadline` passes; latencies of 200s, and
/// the number of failures.
async fn worker(
    client: reqwest::Client,
    options: Arc<Options>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut failed = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= options.requests || Instant::now() >= deadline {
            return (latencies, failed);
        }
        let body = options.bodies[i % options.bodies.len()].clone();
        let started = Instant::now();
        let sent = client
            .post(&options.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let ok = match sent {
            Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
            _ => false,
        };
        if ok {
            latencies.push(started.elapsed());
        } else {
            failed += 1;
        }
    }
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = match options() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("load: {e}");
            std::process::exit(2);
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("HTTP client");
    // Warm-up (not measured): the first requests pay for allocation and connection set-up.
    for i in 0..options.warmup {
        let body = options.bodies[i % options.bodies.len()].clone();
        let _ = client.post(&options.url).body(body).send().await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let tasks: Vec<_> = (0..options.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                options.clone(),
                next.clone(),
                deadline,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (l, f) = task.await.expect("worker task");
        latencies.extend(l);
        failed += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let ok = latencies.len();
    let line = serde_json::json!({
        "concurrency": options.concurrency,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        "requests_per_second": ok as f64 / seconds,
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "mean_ms": latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / ok.max(1) as f64,
    });
    println!("{line}");
}
