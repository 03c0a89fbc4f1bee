//! `qa-serve` end to end: a real server on an ephemeral loopback port, a real HTTP client, the
//! tiny golden QA model, and every answer compared with `Predictor::pipeline`'s for the same
//! question (the code `qa predict` runs), shaped as `qa predict --json` prints it.

use std::time::Duration;

use qa_data::progress::Progress;
use qa_data::requests::request_example;
use qa_data::{ExampleId, FeatureConfig};
use qa_eval::{PipelineAnswer, PipelineConfig, Predictor};
use qa_model::backend::Compute;
use qa_model::InferencePrecision;
use qa_serve::{BatchConfig, ConnectionLimits, ServeConfig, ServeError, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

fn model_dir() -> std::path::PathBuf {
    qa_testkit::shared_dir().join("golden/tiny-bert-qa")
}

/// The window settings `qa predict` uses by default.
fn windows() -> FeatureConfig {
    FeatureConfig {
        word_ids: true,
        progress: Progress::Hidden,
        ..FeatureConfig::default()
    }
}

fn load() -> Result<Predictor<Compute>, qa_eval::EvalError> {
    Predictor::<Compute>::load(&model_dir(), windows(), 32, &Default::default())
}

/// `qa serve --precision int8`'s loader.
fn load_int8() -> Result<Predictor<Compute>, qa_eval::EvalError> {
    load()?.with_precision(InferencePrecision::Int8)
}

/// COVID-QA questions about its shorter articles (each context is several windows long),
/// then short hand-written ones (one window each).
fn questions() -> Vec<(String, String)> {
    let path = qa_testkit::shared_dir().join("data/covid-qa/dev.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data: Value = serde_json::from_str(&text).expect("COVID-QA dev is JSON");
    let mut out = Vec::new();
    for article in data["data"].as_array().expect("data list") {
        for paragraph in article["paragraphs"].as_array().expect("paragraphs") {
            let context = paragraph["context"].as_str().expect("context");
            if context.chars().count() > 10_000 {
                continue;
            }
            for qa in paragraph["qas"].as_array().expect("qas").iter().take(3) {
                let question = qa["question"].as_str().expect("question");
                out.push((question.to_string(), context.to_string()));
            }
        }
    }
    assert!(out.len() >= 12, "only {} COVID-QA questions", out.len());
    let short = [
        ("What causes COVID-19?", "COVID-19 is caused by the coronavirus SARS-CoV-2, first identified in Wuhan in 2019."),
        ("Where was the virus first identified?", "COVID-19 is caused by the coronavirus SARS-CoV-2, first identified in Wuhan in 2019."),
        ("Who wrote the report?", "The report was written by Dr. Ada Byron and reviewed by the ethics board in March."),
        ("When was it reviewed?", "The report was written by Dr. Ada Byron and reviewed by the ethics board in March."),
        ("How is influenza spread?", "Influenza spreads mainly through droplets made when people cough, sneeze or talk."),
        ("What do masks reduce?", "Masks reduce the spread of respiratory droplets from the wearer to other people nearby."),
    ];
    out.extend(short.iter().map(|&(q, c)| (q.to_string(), c.to_string())));
    out
}

/// What `qa predict --question Q --context C` computes for one question.
fn reference(
    predictor: &Predictor<Compute>,
    (question, context): &(String, String),
    options: &PipelineConfig,
) -> Vec<PipelineAnswer> {
    let example = request_example(ExampleId::Number(0), question, context);
    let mut answers = predictor
        .pipeline(&[example], options, Progress::Hidden)
        .expect("reference answers");
    answers.pop().expect("one example")
}

/// As `qa predict --json` prints answers: one answer alone when top_k is 1, else a list.
fn predict_json(answers: &[PipelineAnswer], top_k: usize) -> Value {
    if top_k == 1 && answers.len() == 1 {
        serde_json::to_value(&answers[0]).unwrap()
    } else {
        serde_json::to_value(answers).unwrap()
    }
}

/// Equal JSON; scores may differ by a relative 1e-6 (on the CPU backend they are identical,
/// but a window padded to another request's longer window could in principle sum its
/// attention in another order).
fn assert_same_answer(got: &Value, want: &Value, what: &str) {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{what}: {got} vs {want}");
            for (g, w) in g.iter().zip(w) {
                assert_same_answer(g, w, what);
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(g), keys(w), "{what}: {got} vs {want}");
            for (key, w) in w {
                let g = &g[key];
                if key == "score" {
                    let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs().max(1e-6),
                        "{what}: score {g} vs {w}"
                    );
                } else {
                    assert_eq!(g, w, "{what}: {key}");
                }
            }
        }
        _ => assert_eq!(got, want, "{what}"),
    }
}

async fn start(config: ServeConfig) -> Server {
    start_with(load, config).await
}

async fn start_with(
    load: fn() -> Result<Predictor<Compute>, qa_eval::EvalError>,
    config: ServeConfig,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let mut server = Server::start(listener, load, config).expect("server starts");
    server.ready().await.expect("model loads");
    server
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// `http://127.0.0.1:PORT`.
fn base(server: &Server) -> String {
    format!("http://{}", server.local_addr())
}

/// POSTs `body` (JSON text) to /v1/answer; the status and the parsed reply.
async fn post(client: &reqwest::Client, base: &str, body: String) -> (StatusCode, Value) {
    post_to(client, &format!("{base}/v1/answer"), body).await
}

/// POSTs `body` (JSON text) to `url`; the status and the parsed reply.
async fn post_to(client: &reqwest::Client, url: &str, body: String) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let value = response.json::<Value>().await.expect("a JSON reply");
    (status, value)
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the sample named exactly `name` (with labels) in a Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// Waits until `n` requests are admitted and waiting for the model.
async fn until_queued(client: &reqwest::Client, base: &str, n: f64) {
    for _ in 0..400 {
        if sample(&metrics(client, base).await, "qa_serve_queue_depth") >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the queue never held {n} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_question_is_answered_as_qa_predict_answers_it() {
    // Four windows per pass: the COVID-QA contexts' windows run over several passes.
    let server = start(ServeConfig {
        batching: BatchConfig {
            max_windows: 4,
            max_wait: Duration::from_millis(1),
            ..BatchConfig::default()
        },
        ..ServeConfig::default()
    })
    .await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    let picked = [
        &questions[0],
        &questions[4],
        &questions[questions.len() - 1],
    ];
    for (question, context) in picked {
        for (top_k, impossible) in [(1, false), (3, false), (2, true)] {
            let options = PipelineConfig {
                top_k,
                handle_impossible_answer: impossible,
                ..PipelineConfig::default()
            };
            let want = predict_json(
                &reference(&predictor, &(question.clone(), context.clone()), &options),
                top_k,
            );
            let (status, got) = post(
                &client,
                &base,
                json!({"question": question, "context": context, "top_k": top_k,
                       "handle_impossible_answer": impossible})
                .to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{got}");
            assert_eq!(got.is_object(), top_k == 1, "{got}");
            assert_same_answer(&got, &want, &format!("{question} (top_k {top_k})"));
        }
    }
    // The defaults are `qa predict`'s: one answer, an object.
    let (question, context) = &questions[1];
    let want = predict_json(
        &reference(&predictor, &questions[1], &PipelineConfig::default()),
        1,
    );
    let (_, got) = post(
        &client,
        &base,
        json!({"question": question, "context": context}).to_string(),
    )
    .await;
    assert_same_answer(&got, &want, question);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_the_hugging_face_shape_answer_in_order() {
    let server = start(ServeConfig::default()).await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    let picked: Vec<&(String, String)> = questions.iter().step_by(3).take(6).collect();
    let options = PipelineConfig {
        top_k: 2,
        ..PipelineConfig::default()
    };
    let inputs: Vec<Value> = picked
        .iter()
        .map(|(q, c)| json!({"question": q, "context": c}))
        .collect();
    let (status, got) = post(
        &client,
        &base,
        json!({"inputs": inputs, "top_k": 2}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let want: Vec<Value> = picked
        .iter()
        .map(|qc| predict_json(&reference(&predictor, qc, &options), 2))
        .collect();
    assert_same_answer(&got, &Value::Array(want), "inputs list");

    // The HF Inference API shape, options under "parameters".
    let (question, context) = &questions[2];
    for top_k in [1, 3] {
        let options = PipelineConfig {
            top_k,
            ..PipelineConfig::default()
        };
        let (status, got) = post(
            &client,
            &base,
            json!({"inputs": {"question": question, "context": context},
                   "parameters": {"top_k": top_k}})
            .to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let want = predict_json(&reference(&predictor, &questions[2], &options), top_k);
        assert_same_answer(&got, &want, "HF shape");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_status_and_disturb_no_one() {
    let server = start(ServeConfig {
        max_body_bytes: 4096,
        ..ServeConfig::default()
    })
    .await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    let good: Vec<&(String, String)> = questions.iter().rev().take(4).collect();
    let wants: Vec<Value> = good
        .iter()
        .map(|qc| predict_json(&reference(&predictor, qc, &PipelineConfig::default()), 1))
        .collect();

    let big = "word ".repeat(2000);
    let bad: Vec<(String, StatusCode)> = vec![
        ("{\"question\": ".into(), StatusCode::BAD_REQUEST),
        ("not json at all".into(), StatusCode::BAD_REQUEST),
        (r#"{"context": "Ann did."}"#.into(), StatusCode::BAD_REQUEST),
        (r#"{"question": "Who?"}"#.into(), StatusCode::BAD_REQUEST),
        (
            r#"{"question": 7, "context": "Ann did."}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (r#"{"inputs": "Who?"}"#.into(), StatusCode::BAD_REQUEST),
        (
            r#"{"inputs": [{"question": "Who?"}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        ("[]".into(), StatusCode::BAD_REQUEST),
        (
            r#"{"question": "", "context": "Ann did."}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"question": "Who?", "context": "  \n"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"question": "Who?", "context": "Ann.", "top_k": 0}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (r#"{"inputs": []}"#.into(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"question": "Who?", "context": big}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    let bad_count = bad.len();
    let bad_requests = bad.into_iter().map(|(body, status)| {
        let client = client.clone();
        let base = &base;
        async move {
            let (got, value) = post(&client, base, body.clone()).await;
            assert_eq!(got, status, "{body:.80}: {value}");
            assert!(
                value["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{value}"
            );
        }
    });
    let good_requests = good.iter().zip(&wants).map(|((q, c), want)| {
        let client = client.clone();
        let base = &base;
        async move {
            let (status, got) = post(
                &client,
                base,
                json!({"question": q, "context": c}).to_string(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{got}");
            assert_same_answer(&got, want, q);
        }
    });
    // Good and bad requests at once.
    tokio::join!(
        futures_join(bad_requests.collect()),
        futures_join(good_requests.collect())
    );

    let not_found = client
        .get(format!("{base}/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert!(not_found.json::<Value>().await.unwrap()["error"].is_string());
    let wrong_method = client
        .get(format!("{base}/v1/answer"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);

    let text = metrics(&client, &base).await;
    assert_eq!(sample(&text, "qa_serve_requests_total{code=\"200\"}"), 4.0);
    assert_eq!(sample(&text, "qa_serve_requests_total{code=\"400\"}"), 8.0);
    assert_eq!(sample(&text, "qa_serve_requests_total{code=\"422\"}"), 4.0);
    assert_eq!(sample(&text, "qa_serve_requests_total{code=\"413\"}"), 1.0);
    assert_eq!(sample(&text, "qa_serve_requests_total{code=\"404\"}"), 1.0);
    assert_eq!(bad_count, 13);
    server.shutdown().await.unwrap();
}

/// Runs futures concurrently on this task (the test needs no `futures` crate for it).
async fn futures_join<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut pending: Vec<_> = set.iter_mut().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    all_done = false;
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_with_503_and_retry_after() {
    let questions = questions();
    let (question, context) = questions[0].clone();
    let first_body = json!({"question": question, "context": context}).to_string();
    // One place in the queue; then many places but only the first request's bytes. The
    // batcher waits long for company.
    for (max_queue, max_queued_bytes) in [(1, 8 << 20), (100, first_body.len() + 5)] {
        let server = start(ServeConfig {
            max_queue,
            max_queued_bytes,
            batching: BatchConfig {
                max_windows: 1000,
                max_wait: Duration::from_millis(400),
                ..BatchConfig::default()
            },
            ..ServeConfig::default()
        })
        .await;
        let base = base(&server);
        let predictor = load().unwrap();
        let client = client();
        let want = predict_json(
            &reference(&predictor, &questions[0], &PipelineConfig::default()),
            1,
        );
        let first = {
            let (client, base, body) = (client.clone(), base.clone(), first_body.clone());
            tokio::spawn(async move { post(&client, &base, body).await })
        };
        until_queued(&client, &base, 1.0).await;
        assert_eq!(
            sample(&metrics(&client, &base).await, "qa_serve_queued_bytes"),
            first_body.len() as f64
        );
        let refused = client
            .post(format!("{base}/v1/answer"))
            .body(json!({"question": "Who?", "context": "Ann did."}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        let error = refused.json::<Value>().await.unwrap()["error"].to_string();
        assert!(error.contains("busy"), "{error}");
        let (status, got) = first.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_same_answer(&got, &want, "the admitted request");
        assert_eq!(
            sample(&metrics(&client, &base).await, "qa_serve_queued_bytes"),
            0.0
        );
        server.shutdown().await.unwrap();
    }
}

/// Slow and stalled clients are timed out, and a shutdown waits for none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_timed_out_and_do_not_hold_up_a_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        // Long: the shutdown below must not wait for the half-sent request.
        shutdown_grace: Duration::from_secs(60),
    };
    let server = start(ServeConfig {
        connections: limits,
        ..ServeConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let connect = || tokio::net::TcpStream::connect(addr);
    // Reads until the server closes the connection; fails if it keeps it open for 10 s.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
            .await
            .expect("the server closes the connection")
            .expect("read");
        String::from_utf8_lossy(&reply).into_owned()
    }

    // Headers that never end.
    let mut stalled = connect().await.unwrap();
    stalled
        .write_all(b"POST /v1/answer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    until_closed(&mut stalled).await;

    // A body that stops halfway: 408.
    let mut paused = connect().await.unwrap();
    paused
        .write_all(
            b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"question\"",
        )
        .await
        .unwrap();
    let reply = until_closed(&mut paused).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");

    // An idle keep-alive connection, after one answered request.
    let mut idle = connect().await.unwrap();
    let body = json!({"question": "Who?", "context": "Ann did."}).to_string();
    idle.write_all(
        format!(
            "POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let reply = until_closed(&mut idle).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A half-sent request does not keep a stopping server up.
    let mut half = connect().await.unwrap();
    half.write_all(b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_passes_and_never_mix() {
    let server = start(ServeConfig {
        // One forward pass per batch: windows of many requests and lengths padded together.
        batching: BatchConfig {
            max_windows: 48,
            max_wait: Duration::from_millis(30),
            max_padding: 1.0,
        },
        ..ServeConfig::default()
    })
    .await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    // 24 requests: every question once, then again with top_k 2, until 24.
    let cases: Vec<((String, String), usize)> = questions
        .iter()
        .map(|qc| (qc.clone(), 1))
        .chain(questions.iter().map(|qc| (qc.clone(), 2)))
        .take(24)
        .collect();
    assert_eq!(cases.len(), 24);
    let wants: Vec<Value> = cases
        .iter()
        .map(|(qc, top_k)| {
            let options = PipelineConfig {
                top_k: *top_k,
                ..PipelineConfig::default()
            };
            predict_json(&reference(&predictor, qc, &options), *top_k)
        })
        .collect();
    let tasks: Vec<_> = cases
        .iter()
        .map(|((q, c), top_k)| {
            let (client, base) = (client.clone(), base.clone());
            let body = json!({"question": q, "context": c, "top_k": top_k}).to_string();
            tokio::spawn(async move { post(&client, &base, body).await })
        })
        .collect();
    for (i, (task, want)) in tasks.into_iter().zip(&wants).enumerate() {
        let (status, got) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}: {got}");
        assert_same_answer(&got, want, &format!("request {i}: {}", cases[i].0 .0));
    }
    // The queue gauge drops when the batcher hands a request's answer back, which can be a
    // moment after the client has it: wait (bounded) for the last one.
    let mut text = metrics(&client, &base).await;
    // Every response is counted, `/metrics`' own included: a poll's text holds the earlier polls.
    let mut earlier_polls = 0.0;
    for _ in 0..100 {
        if sample(&text, "qa_serve_queue_depth") == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = metrics(&client, &base).await;
        earlier_polls += 1.0;
    }
    let passes = sample(&text, "qa_serve_batch_requests_count");
    let alone = sample(&text, "qa_serve_batch_requests_bucket{le=\"1\"}");
    assert!(
        passes > alone,
        "no forward pass held windows of two requests ({passes} passes, {alone} alone)\n{text}"
    );
    assert_eq!(sample(&text, "qa_serve_queue_depth"), 0.0);
    assert_eq!(
        sample(&text, "qa_serve_requests_total{code=\"200\"}"),
        24.0 + earlier_polls
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int8_server_answers_concurrent_requests_as_int8_qa_predict_does() {
    // Windows of several requests and lengths share passes: int8 quantizes each token's row
    // on its own, so a window's answer does not depend on its batch.
    let server = start_with(
        load_int8,
        ServeConfig {
            batching: BatchConfig {
                max_windows: 8,
                max_wait: Duration::from_millis(20),
                max_padding: 1.0,
            },
            ..ServeConfig::default()
        },
    )
    .await;
    let (base, client) = (base(&server), client());
    let (int8, f32) = (load_int8().unwrap(), load().unwrap());
    let questions = questions();
    let options = PipelineConfig {
        top_k: 2,
        ..PipelineConfig::default()
    };
    let wants: Vec<Value> = questions
        .iter()
        .map(|qc| predict_json(&reference(&int8, qc, &options), 2))
        .collect();
    let f32_answers: Vec<Value> = questions
        .iter()
        .map(|qc| predict_json(&reference(&f32, qc, &options), 2))
        .collect();
    assert_ne!(
        wants, f32_answers,
        "int8 scores equal f32's: int8 is not in use"
    );
    let tasks: Vec<_> = questions
        .iter()
        .map(|(q, c)| {
            let (client, base) = (client.clone(), base.clone());
            let body = json!({"question": q, "context": c, "top_k": 2}).to_string();
            tokio::spawn(async move { post(&client, &base, body).await })
        })
        .collect();
    for (i, (task, want)) in tasks.into_iter().zip(&wants).enumerate() {
        let (status, got) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "request {i}: {got}");
        assert_same_answer(&got, want, &format!("request {i}: {}", questions[i].0));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight() {
    // The batcher waits 300 ms for company: the requests are in flight when shutdown starts.
    let server = start(ServeConfig {
        batching: BatchConfig {
            max_windows: 1000,
            max_wait: Duration::from_millis(300),
            ..BatchConfig::default()
        },
        ..ServeConfig::default()
    })
    .await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    let cases = [&questions[0], &questions[5]];
    let wants: Vec<Value> = cases
        .iter()
        .map(|qc| predict_json(&reference(&predictor, qc, &PipelineConfig::default()), 1))
        .collect();
    let tasks: Vec<_> = cases
        .iter()
        .map(|(q, c)| {
            let (client, base) = (client.clone(), base.clone());
            let body = json!({"question": q, "context": c}).to_string();
            tokio::spawn(async move { post(&client, &base, body).await })
        })
        .collect();
    until_queued(&client, &base, 2.0).await;
    server.shutdown().await.expect("a clean stop");
    for (task, want) in tasks.into_iter().zip(&wants) {
        let (status, got) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_same_answer(&got, want, "a request in flight at shutdown");
    }
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "the server still accepts connections after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_model_loads_and_a_failed_load_stops_the_server() {
    let (open_gate, gate) = std::sync::mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut server = Server::start(
        listener,
        move || {
            gate.recv().expect("the test opens the gate");
            load()
        },
        ServeConfig::default(),
    )
    .unwrap();
    let base = base(&server);
    let client = client();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "loading"})
    );
    let early = client
        .post(format!("{base}/v1/answer"))
        .body(json!({"question": "Who?", "context": "Ann did."}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(early.headers().contains_key("retry-after"));
    open_gate.send(()).unwrap();
    server.ready().await.unwrap();
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(sample(&metrics(&client, &base).await, "qa_serve_model_ready") == 1.0);
    server.shutdown().await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let missing = model_dir().join("no-such-model");
    let mut failing = Server::start(
        listener,
        move || Predictor::<Compute>::load(&missing, windows(), 32, &Default::default()),
        ServeConfig::default(),
    )
    .unwrap();
    assert!(matches!(
        failing.ready().await,
        Err(ServeError::ModelUnavailable)
    ));
    let ended = failing.shutdown().await;
    assert!(matches!(ended, Err(ServeError::Load(_))), "{ended:?}");
}

/// The answers the HF pipeline gave for each task parameter (`fixtures/hf_parameters`).
fn hf_parameter_golden() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf_parameters/golden.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).expect("JSON")
}

/// Our answers equal the pipeline's: texts, char spans and order; scores within 1e-4 relative.
fn assert_pipeline_answers(ours: &Value, hf: &Value, what: &str) {
    let ours = match ours {
        Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    let hf = hf.as_array().expect("a list");
    assert_eq!(ours.len(), hf.len(), "{what}: {ours:?} vs {hf:?}");
    for (a, b) in ours.iter().zip(hf) {
        for key in ["answer", "start", "end"] {
            assert_eq!(a[key], b[key], "{what}: ours {a} vs pipeline {b}");
        }
        let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-4 * y.abs(), "{what}: {x} vs {y}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hf_client_shape_and_route_answers_alike() {
    let server = start(ServeConfig::default()).await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let (question, context) = questions()[2].clone();
    let options = PipelineConfig {
        top_k: 2,
        ..PipelineConfig::default()
    };
    let want = predict_json(
        &reference(&predictor, &(question.clone(), context.clone()), &options),
        2,
    );
    let parameters = json!({"top_k": 2});
    let bodies = [
        json!({"inputs": {"question": question, "context": context}, "parameters": parameters}),
        json!({"question": question, "context": context, "parameters": parameters}),
        json!({"inputs": null, "question": question, "context": context,
               "parameters": parameters}),
    ];
    for path in ["/", "/predict", "/v1/answer"] {
        for body in &bodies {
            let (status, got) = post_to(&client, &format!("{base}{path}"), body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{path} {got}");
            assert!(got.is_array(), "top_k 2 answers with a list: {got}");
            assert_same_answer(&got, &want, path);
        }
    }
    // top_k 1: an object, as the pipeline returns it.
    let (_, one) = post_to(
        &client,
        &format!("{base}/"),
        json!({"inputs": {"question": question, "context": context}}).to_string(),
    )
    .await;
    assert!(one.is_object(), "{one}");

    // `GET /` is the HF inference toolkit's health check.
    let health = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ready");
    let openapi: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        openapi["paths"]["/predict"]["post"].is_object(),
        "{openapi}"
    );

    // Misspelled or unknown options and fields are refused, naming them.
    for (body, named) in [
        (
            json!({"inputs": {"question": question, "context": context},
                   "parameters": {"doc_strid": 64}}),
            "parameters.doc_strid",
        ),
        (
            json!({"question": question, "context": context, "topk": 3}),
            "topk",
        ),
        (
            json!({"inputs": {"question": question, "context": context, "title": "x"}}),
            "inputs.title",
        ),
    ] {
        let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
        let error = got["error"].as_str().unwrap();
        assert!(error.contains(named), "{error}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_parameter_answers_as_the_hf_pipeline_does() {
    let server = start(ServeConfig::default()).await;
    let base = base(&server);
    let client = client();
    let golden = hf_parameter_golden();
    let inputs = golden["inputs"].as_array().unwrap();
    let mut compared = 0;
    for case in golden["cases"].as_array().unwrap() {
        let settings = &case["settings"];
        for (i, (input, want)) in inputs
            .iter()
            .zip(case["answers"].as_array().unwrap())
            .enumerate()
        {
            let body = json!({"inputs": input, "parameters": settings});
            let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{settings} input {i}: {got}");
            assert_pipeline_answers(&got, want, &format!("{settings} input {i}"));
            compared += 1;
        }
    }
    let cuts = &golden["question_cuts"];
    for case in cuts["cases"].as_array().unwrap() {
        let input = &inputs[case["input"].as_u64().unwrap() as usize];
        let mut parameters = cuts["window"].clone();
        parameters["max_question_len"] = case["max_question_len"].clone();
        let body = json!({"inputs": input, "parameters": parameters});
        let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_pipeline_answers(&got, &case["answers"], &format!("max_question_len {case}"));
        compared += 1;
    }
    assert_eq!(compared, 6 * 6 + 6);

    // Out of range: refused with the field named (the tiny model has 512 positions).
    let input = &inputs[0];
    for (parameters, named) in [
        (json!({"max_seq_len": 1000}), "max_seq_len"),
        (json!({"doc_stride": 384}), "doc_stride"),
        (json!({"max_seq_len": 128, "doc_stride": 128}), "doc_stride"),
        (json!({"max_question_len": 0}), "max_question_len"),
        (json!({"top_k": 0}), "top_k"),
        (json!({"max_answer_len": 0}), "max_answer_len"),
        (json!({"max_seq_len": 16, "doc_stride": 4}), "max_seq_len"),
    ] {
        let body = json!({"inputs": input, "parameters": parameters});
        let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{parameters}: {got}"
        );
        let error = got["error"].as_str().unwrap();
        assert!(error.contains(named), "{parameters}: {error}");
    }
    server.shutdown().await.unwrap();
}

/// Five documents (one several windows long): the server's ranking equals each document decoded
/// alone by run_qa's rules (utils_qa's n-best), pooled and ranked by start + end logit, with
/// overlapping spans and equal texts merged into the better one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_question_over_many_documents_ranks_as_pooled_logits() {
    use qa_eval::{decode, normalize_answer, DecodeConfig};
    let server = start(ServeConfig {
        batching: BatchConfig {
            max_windows: 4,
            ..BatchConfig::default()
        },
        ..ServeConfig::default()
    })
    .await;
    let base = base(&server);
    let predictor = load().unwrap();
    let client = client();
    let questions = questions();
    let question = questions[0].0.clone();
    let texts: Vec<String> = [(0, 3000), (3, 800), (6, 400), (9, 1500), (12, 250)]
        .iter()
        .map(|&(i, n)| questions[i].1.chars().take(n).collect())
        .collect();
    let ids = ["a", "b", "c", "d", "e"];

    // The reference: each document alone, decoded as utils_qa decodes one example.
    let config = DecodeConfig {
        max_answer_length: 15,
        ..DecodeConfig::default()
    };
    // (logit, document, start, end, text), best first.
    let mut pooled: Vec<(f32, usize, usize, usize, String)> = Vec::new();
    for (d, text) in texts.iter().enumerate() {
        let example = request_example(ExampleId::Number(0), &question, text);
        let scores = predictor
            .logits(std::slice::from_ref(&example), Progress::Hidden)
            .unwrap();
        let decoded = decode(&[example], &scores.features, &scores.logits, &config).unwrap();
        for entry in &decoded.examples[0].nbest {
            pooled.push((
                entry.start_logit + entry.end_logit,
                d,
                entry.offsets[0],
                entry.offsets[1],
                entry.text.clone(),
            ));
        }
    }
    pooled.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut want: Vec<&(f32, usize, usize, usize, String)> = Vec::new();
    for candidate in &pooled {
        let (_, d, start, end, text) = candidate;
        let duplicate = want.iter().any(|(_, kd, ks, ke, kt)| {
            (kd == d && start < ke && ks < end) || normalize_answer(kt) == normalize_answer(text)
        });
        if !duplicate {
            want.push(candidate);
        }
    }
    let top_k = 4;
    want.truncate(top_k);
    assert!(
        want.iter()
            .map(|w| w.1)
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "answers come from several documents: {want:?}"
    );

    let documents: Vec<Value> = texts
        .iter()
        .zip(ids)
        .map(|(text, id)| json!({"id": id, "text": text}))
        .collect();
    let body = json!({"question": question, "documents": documents,
                      "parameters": {"top_k": top_k, "align_to_words": false}});
    let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    let got = got.as_array().expect("a ranking");
    assert_eq!(got.len(), top_k, "{got:?}");
    for (rank, (ours, (logit, d, start, end, text))) in got.iter().zip(&want).enumerate() {
        assert_eq!(ours["document"]["index"], *d, "rank {rank}: {ours}");
        assert_eq!(ours["document"]["id"], ids[*d], "rank {rank}: {ours}");
        assert_eq!(
            (&ours["start"], &ours["end"], &ours["answer"]),
            (&json!(start), &json!(end), &json!(text)),
            "rank {rank}"
        );
        // Scores are probabilities over one pool: their ratios are the logits' differences.
        let ratio = ours["score"].as_f64().unwrap() / got[0]["score"].as_f64().unwrap();
        let expected = f64::from(logit - want[0].0).exp();
        assert!(
            (ratio - expected).abs() <= 1e-3 * expected,
            "rank {rank}: {ratio} vs {expected}"
        );
    }

    // run_qa's threshold decides the no-answer across all documents.
    for (threshold, null_first) in [(-1.0e6, true), (1.0e6, false)] {
        let body = json!({"question": question, "documents": documents, "top_k": 2,
                          "handle_impossible_answer": true,
                          "null_score_diff_threshold": threshold});
        let (status, got) = post_to(&client, &format!("{base}/"), body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        let answers: Vec<&str> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["answer"].as_str().unwrap())
            .collect();
        assert_eq!(
            answers[0].is_empty(),
            null_first,
            "{threshold}: {answers:?}"
        );
        assert_eq!(
            answers.iter().filter(|a| a.is_empty()).count(),
            usize::from(null_first)
        );
    }
    for (body, status) in [
        (
            json!({"question": question, "documents": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"question": question, "documents": [{"text": "x", "title": "t"}]}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, value) = post_to(&client, &format!("{base}/"), body.to_string()).await;
        assert_eq!(got, status, "{value}");
    }
    server.shutdown().await.unwrap();
}

/// Writes `request` whole to a new connection (as a client that reads only afterwards), then
/// reads until the server closes it (within 10 s).
async fn exchange(server: &Server, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    stream
        .write_all(request)
        .await
        .expect("the whole request is read");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// A client that writes a whole oversized body before reading (as Python's urllib does) gets
/// the 413, not a reset connection; a declared oversized body is refused at once; a malformed
/// Content-Length is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_drained_and_refused_with_413() {
    let server = start(ServeConfig::default()).await;
    let body = json!({"question": "Who?", "context": "word ".repeat(1_200_000)}).to_string();
    assert!(body.len() > 6_000_000);
    for path in ["/", "/v1/answer"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = exchange(&server, request.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{path}: {reply:.200}");
        assert!(reply.contains("larger than"), "{reply:.400}");
    }
    // Before any of it is sent.
    let reply = exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50000000\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply:.200}");
    let reply = exchange(
        &server,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12abc\r\n\r\n{}",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:.200}");
    assert!(reply.contains("malformed Content-Length header"), "{reply}");
    server.shutdown().await.unwrap();
}
