//! The load generator of `cargo xtask bench serve`: `concurrency` tokio tasks POST request
//! bodies (JSON Lines, used in turn) to a QA server until `requests` are sent or `seconds` have
//! passed, and print one JSON line: requests/s, p50/p99 latency, failures. Loopback only.
//!
//! The soak mode (`--bad-percent N --check`) mixes in N% bad requests (malformed JSON, a missing
//! field, an empty question, a misspelled option), each of which must get its 400/422, and checks
//! every answer against the one the server gave that body alone before the load began.
//!
//! ```text
//! load --url http://127.0.0.1:8080/v1/answer --bodies requests.jsonl --concurrency 8 \
//!      --requests 400 --seconds 20 [--warmup 8] [--bad-percent 10 --check]
//! ```

use std::collections::HashMap;

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
    bad_percent: usize,
    /// The answer each body got alone, when answers are checked.
    references: Option<HashMap<String, serde_json::Value>>,
}

/// Bad requests of the soak, with the status each must get.
const BAD: [(&str, u16); 4] = [
    ("{\"question\": \"cut off", 400),
    ("{\"question\": \"Who?\"}", 400),
    ("{\"question\": \"\", \"context\": \"Some text.\"}", 422),
    // A misspelled option is refused, never silently ignored.
    (
        "{\"question\": \"Who?\", \"context\": \"Ann.\", \"topk\": 2}",
        400,
    ),
];

/// What the responses were.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: usize,
    wrong_answers: usize,
    bad_rejected: usize,
    bad_misanswered: usize,
    backpressure: usize,
    server_errors: usize,
}

/// Two replies give the same answers: texts and spans equal, scores within 1e-3 (batches of
/// other sizes may round differently).
fn same_answers(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_answers(p, q))
        }
        (serde_json::Value::Object(_), serde_json::Value::Object(_)) => {
            ["answer", "start", "end"].iter().all(|k| a[k] == b[k])
                && match (a["score"].as_f64(), b["score"].as_f64()) {
                    (Some(p), Some(q)) => (p - q).abs() <= 1e-3,
                    _ => false,
                }
        }
        _ => false,
    }
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
        bad_percent: number("--bad-percent", 0)?.min(100),
        references: args.iter().any(|a| a == "--check").then(HashMap::new),
    })
}

/// Sends requests until `requests` are taken or `deadline` passes, and tallies the replies.
async fn worker(
    client: reqwest::Client,
    options: Arc<Options>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= options.requests || Instant::now() >= deadline {
            return tally;
        }
        // Every request whose number falls in the bad share (spread evenly) is a bad one.
        let bad = (i * 37 % 100) < options.bad_percent;
        let body = if bad {
            BAD[i % BAD.len()].0.to_string()
        } else {
            options.bodies[i % options.bodies.len()].clone()
        };
        let started = Instant::now();
        let sent = client
            .post(&options.url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let Ok(response) = sent else {
            tally.failed += 1;
            continue;
        };
        let status = response.status().as_u16();
        let Ok(bytes) = response.bytes().await else {
            tally.failed += 1;
            continue;
        };
        match status {
            503 => tally.backpressure += 1,
            500..=599 => tally.server_errors += 1,
            _ if bad => {
                if status == BAD[i % BAD.len()].1 {
                    tally.bad_rejected += 1;
                } else {
                    tally.bad_misanswered += 1;
                }
            }
            200 => {
                tally.latencies.push(started.elapsed());
                if let Some(references) = &options.references {
                    let got = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                    if !got
                        .is_some_and(|g| references.get(&body).is_some_and(|r| same_answers(&g, r)))
                    {
                        tally.wrong_answers += 1;
                    }
                }
            }
            _ => tally.failed += 1,
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
    let launched = Instant::now();
    let mut options = match options() {
        Ok(o) => o,
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
    // The reference answers: each body alone, before any load.
    if let Some(references) = options.references.as_mut() {
        for body in &options.bodies {
            let reply = client.post(&options.url).body(body.clone()).send().await;
            let value = match reply {
                Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
                _ => None,
            };
            match value {
                Some(v) => {
                    references.insert(body.clone(), v);
                }
                None => {
                    eprintln!("load: no reference answer for {body}");
                    std::process::exit(1);
                }
            }
        }
    }
    let options = Arc::new(options);
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
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("worker task");
        all.latencies.extend(t.latencies);
        all.failed += t.failed;
        all.wrong_answers += t.wrong_answers;
        all.bad_rejected += t.bad_rejected;
        all.bad_misanswered += t.bad_misanswered;
        all.backpressure += t.backpressure;
        all.server_errors += t.server_errors;
    }
    let mut latencies = all.latencies;
    let failed = all.failed;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let ok = latencies.len();
    let line = serde_json::json!({
        "concurrency": options.concurrency,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        // Reference answers and warm-up come first: a caller sampling the server from launch
        // knows where the load began.
        "load_started_after_s": (started - launched).as_secs_f64(),
        "requests_per_second": ok as f64 / seconds,
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "mean_ms": latencies.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / ok.max(1) as f64,
        "wrong_answers": options.references.as_ref().map(|_| all.wrong_answers),
        "bad_rejected": all.bad_rejected,
        "bad_misanswered": all.bad_misanswered,
        "backpressure_503": all.backpressure,
        "server_errors_5xx": all.server_errors,
    });
    println!("{line}");
}
