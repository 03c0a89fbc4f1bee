//! Models and datasets by Hugging Face Hub id, as a `run_qa.py` user names them: through a cache
//! in the real Hub layout (`refs/main` → `snapshots/<commit>/` links into `blobs/`), offline
//! (`HF_HUB_OFFLINE=1`) and online against a stand-in Hub on loopback (`HF_ENDPOINT`, `HF_TOKEN`,
//! only missing files downloaded); Parquet data (`fixtures/hub` of qa-data, written by
//! `datasets`); and the model card `qa train` writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const MODEL_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const DATASET_COMMIT: &str = "fedcba9876543210fedcba9876543210fedcba98";
/// The tiny model's files that a Hub repo of it holds.
const MODEL_FILES: [&str; 7] = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

fn tiny_model() -> PathBuf {
    qa_testkit::shared_dir().join("golden/tiny-bert-qa")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qa-data/tests/fixtures/hub")
        .join(name)
}

/// The `qa` command with a clean Hub environment plus `env`.
fn qa_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qa"));
    command.args(args).env("RUST_LOG", "warn");
    for var in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command
}

/// `qa` with a clean Hub environment plus `env`.
fn qa(args: &[&str], env: &[(&str, &str)]) -> Output {
    qa_command(args, env).output().expect("qa runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn content_hash(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}{:08x}", h.finish(), bytes.len())
}

/// Puts `files` (repo path → local file) into `hub/<folder>` as the Hub client does: content in
/// `blobs/<etag>`, `snapshots/<commit>/<path>` a relative link to it, `refs/main` the commit.
fn cache_repo(hub: &Path, folder: &str, commit: &str, files: &[(&str, PathBuf)]) {
    let repo = hub.join(folder);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for (name, source) in files {
        let bytes = std::fs::read(source).unwrap();
        let etag = content_hash(&bytes);
        std::fs::write(repo.join("blobs").join(&etag), &bytes).unwrap();
        let link = repo.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(&etag);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
}

/// An HF home whose cache holds `org/tiny` (the tiny golden model) and `org/squad-like` (the
/// fixture rows as `plain_text/{train,validation}-00000-of-00001.parquet`).
fn hf_home(root: &Path) -> PathBuf {
    let home = root.join("hf");
    let hub = home.join("hub");
    let model: Vec<(&str, PathBuf)> = MODEL_FILES
        .iter()
        .map(|f| (*f, tiny_model().join(f)))
        .collect();
    cache_repo(&hub, "models--org--tiny", MODEL_COMMIT, &model);
    cache_repo(
        &hub,
        "datasets--org--squad-like",
        DATASET_COMMIT,
        &[
            (
                "plain_text/train-00000-of-00001.parquet",
                fixture("rows.parquet"),
            ),
            (
                "plain_text/validation-00000-of-00001.parquet",
                fixture("rows.parquet"),
            ),
            ("README.md", fixture("make_fixtures.py")),
        ],
    );
    home
}

/// Every JSON file `qa eval` wrote into `dir`, without the timings.
fn eval_outputs(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if let Some(map) = value.as_object_mut() {
            map.retain(|k, _| {
                !k.contains("runtime") && !k.contains("per_second") && !k.contains("seconds")
            });
        }
        out.insert(path.file_name().unwrap().to_string_lossy().into(), value);
    }
    out
}

const WINDOWS: [&str; 4] = ["--max-seq-length", "64", "--doc-stride", "16"];

fn eval(model: &str, data: &[&str], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "eval",
        "--model",
        model,
        "--output-dir",
        out.to_str().unwrap(),
    ];
    args.extend(data);
    args.extend(WINDOWS);
    qa(&args, env)
}

#[test]
fn eval_by_hub_ids_offline_equals_the_folder_and_json_route() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path());
    let offline = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let squad = fixture("squad.json");
    let reference_dir = dir.path().join("reference");
    let o = eval(
        tiny_model().to_str().unwrap(),
        &["--data", squad.to_str().unwrap()],
        &reference_dir,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = eval_outputs(&reference_dir);
    assert!(
        reference.contains_key("eval_predictions.json"),
        "{reference:?}"
    );
    assert_eq!(reference["eval_results.json"]["eval_examples"], 8);

    let by_id = dir.path().join("by-id");
    let parquet = fixture("rows.parquet");
    let o = eval(
        "org/tiny",
        &["--data", parquet.to_str().unwrap()],
        &by_id,
        &offline,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(eval_outputs(&by_id), reference);

    let by_name = dir.path().join("by-name");
    let o = eval(
        "org/tiny",
        &["--dataset-name", "org/squad-like"],
        &by_name,
        &offline,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(eval_outputs(&by_name), reference);

    // HF_HUB_CACHE alone locates the cache too.
    let by_cache = dir.path().join("by-cache");
    let hub = home.join("hub");
    let o = eval(
        "org/tiny",
        &[
            "--dataset-name",
            "org/squad-like",
            "--dataset-config-name",
            "plain_text",
        ],
        &by_cache,
        &[
            ("HF_HUB_CACHE", hub.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(eval_outputs(&by_cache), reference);
}

#[test]
fn offline_mode_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path());
    let offline = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let squad = fixture("squad.json");
    let data = ["--data", squad.to_str().unwrap()];
    let out = dir.path().join("out");

    let o = eval("org/absent", &data, &out, &offline);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("model org/absent is not in the Hugging Face cache")
            && e.contains("HF_HUB_OFFLINE=1"),
        "{e}"
    );

    // A snapshot without its weights: both weight names are said.
    let snapshot = home
        .join("hub/models--org--tiny/snapshots")
        .join(MODEL_COMMIT);
    std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
    std::fs::remove_file(snapshot.join("pytorch_model.bin")).unwrap();
    let o = eval("org/tiny", &data, &out, &offline);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("lacks model.safetensors or pytorch_model.bin") && e.contains(MODEL_COMMIT),
        "{e}"
    );

    // A revision that was never downloaded.
    let o = qa(
        &[
            "eval",
            "--model",
            "org/tiny",
            "--revision",
            "v2",
            "--data",
            squad.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
        ],
        &offline,
    );
    assert!(stderr(&o).contains("org/tiny (revision v2) is not in the Hugging Face cache"));

    // Datasets: an unknown configuration names the ones there are; a missing split too.
    let o = eval(
        tiny_model().to_str().unwrap(),
        &[
            "--dataset-name",
            "org/squad-like",
            "--dataset-config-name",
            "other",
        ],
        &out,
        &offline,
    );
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("no configuration \"other\" (it has: plain_text)"),
        "{e}"
    );
    std::fs::remove_file(
        home.join("hub/datasets--org--squad-like/snapshots")
            .join(DATASET_COMMIT)
            .join("plain_text/validation-00000-of-00001.parquet"),
    )
    .unwrap();
    let o = eval(
        tiny_model().to_str().unwrap(),
        &["--dataset-name", "org/squad-like"],
        &out,
        &offline,
    );
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("has no validation split (it has: train)"),
        "{e}"
    );
}

#[test]
fn train_by_hub_ids_writes_a_model_card_with_the_real_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path());
    let out = dir.path().join("tiny-squad-like");
    let o = qa(
        &[
            "train",
            "--model-name-or-path",
            "org/tiny",
            "--dataset-name",
            "org/squad-like",
            "--output-dir",
            out.to_str().unwrap(),
            "--max-seq-length",
            "64",
            "--doc-stride",
            "16",
            "--max-steps",
            "3",
            "--per-device-train-batch-size",
            "4",
            "--eval-strategy",
            "steps",
            "--eval-steps",
            "2",
            "--logging-steps",
            "1",
            "--learning-rate",
            "0.001",
        ],
        &[("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval_results.json")).unwrap()).unwrap();
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let (front, body) = card
        .strip_prefix("---\n")
        .and_then(|c| c.split_once("\n---\n"))
        .expect("YAML front matter");
    let front = format!("{front}\n");
    assert!(
        front.contains("library_name: transformers\nbase_model: org/tiny\n"),
        "{front}"
    );
    assert!(front.contains("datasets:\n- org/squad-like\n"), "{front}");
    assert!(
        front.contains("model-index:\n- name: tiny-squad-like\n"),
        "{front}"
    );
    // The Hub's model-index carries the exact final metrics; the text shows them rounded.
    for (key, title) in [("exact_match", "Exact Match"), ("f1", "F1")] {
        let value = results[format!("eval_{key}")].as_f64().unwrap();
        assert!(
            front.contains(&format!(
                "    - name: {title}\n      type: {key}\n      value: {value}\n"
            )),
            "{key} {value}: {front}"
        );
        assert!(
            body.contains(&format!("\n- {title}: {value:.4}\n")),
            "{body}"
        );
    }
    assert!(body.contains("fine-tuned version of [org/tiny](https://huggingface.co/org/tiny)"));
    assert!(body.contains("[org/squad-like](https://huggingface.co/datasets/org/squad-like)"));
    assert!(
        body.contains("- learning_rate: 1e-3\n- train_batch_size: 4\n"),
        "{body}"
    );
    assert!(body.contains("- training_steps: 3\n"), "{body}");
    // The table: an evaluation at step 2 and one at the end (step 3).
    let rows: Vec<&str> = body
        .lines()
        .skip_while(|l| !l.starts_with("| Training Loss"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(rows.len(), 2, "{body}");
    assert!(
        rows[1].contains(" | 3 | ")
            && rows[1].contains(&format!("{:.4}", results["eval_f1"].as_f64().unwrap()))
    );
    assert!(body.contains("- Burn 0.20.1\n- Tokenizers 0.22.2\n"));
}

/// What the stand-in Hub was asked: (path, Authorization header).
type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A stand-in for the Hub's HTTP API on loopback, serving the tiny model as `org/tiny`: the
/// repo info (`/api/models/org/tiny/revision/main`) and file downloads
/// (`/org/tiny/resolve/main/<file>` with the ETag, X-Repo-Commit and Range answers hf-hub reads).
fn stand_in_hub() -> (String, Requests) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    let requests: Requests = Arc::default();
    let seen = requests.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            fn log(seen: &Requests, path: String, headers: &HeaderMap) {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock().unwrap().push((path, auth));
            }
            let info = |State(seen): State<Requests>, headers: HeaderMap| async move {
                log(&seen, "info".into(), &headers);
                let siblings: Vec<_> = MODEL_FILES
                    .iter()
                    .chain(&["README.md"])
                    .map(|f| serde_json::json!({ "rfilename": f }))
                    .collect();
                (
                    [("content-type", "application/json")],
                    serde_json::json!({ "sha": MODEL_COMMIT, "siblings": siblings }).to_string(),
                )
            };
            let resolve = |State(seen): State<Requests>,
                           UrlPath(file): UrlPath<String>,
                           headers: HeaderMap| async move {
                let range = headers
                    .get("range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("bytes=0-")
                    .to_string();
                log(&seen, format!("{file} {range}"), &headers);
                let Ok(bytes) = std::fs::read(tiny_model().join(&file)) else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                let (from, to) = range
                    .trim_start_matches("bytes=")
                    .split_once('-')
                    .map(|(a, b)| {
                        (
                            a.parse::<usize>().unwrap_or(0),
                            b.parse::<usize>().map_or(bytes.len(), |b| b + 1),
                        )
                    })
                    .unwrap();
                let to = to.min(bytes.len());
                (
                    StatusCode::PARTIAL_CONTENT,
                    [
                        ("etag", format!("\"{}\"", content_hash(&bytes))),
                        ("x-repo-commit", MODEL_COMMIT.to_string()),
                        (
                            "content-range",
                            format!("bytes {from}-{}/{}", to.saturating_sub(1), bytes.len()),
                        ),
                    ],
                    bytes[from..to].to_vec(),
                )
                    .into_response()
            };
            let app = axum::Router::new()
                .route(
                    "/api/models/org/tiny/revision/main",
                    axum::routing::get(info),
                )
                .route("/org/tiny/resolve/main/{file}", axum::routing::get(resolve))
                .with_state(seen);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready_tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = ready_rx.recv().unwrap();
    (format!("http://{addr}"), requests)
}

#[test]
fn online_downloads_only_what_is_missing_from_the_endpoint_with_the_token() {
    let (endpoint, requests) = stand_in_hub();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let env = [
        ("HF_HOME", home.to_str().unwrap()),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_TOKEN", "hf_test_token"),
    ];
    let squad = fixture("squad.json");
    let data = ["--data", squad.to_str().unwrap()];
    let reference_dir = dir.path().join("reference");
    let o = eval(tiny_model().to_str().unwrap(), &data, &reference_dir, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let downloads = |requests: &Requests| -> Vec<String> {
        let mut got: Vec<String> = requests
            .lock()
            .unwrap()
            .drain(..)
            .map(|(what, auth)| {
                assert_eq!(auth.as_deref(), Some("Bearer hf_test_token"), "{what}");
                what
            })
            .filter(|what| what.ends_with("bytes=0-"))
            .map(|what| what.split(' ').next().unwrap().to_string())
            .collect();
        got.sort();
        got
    };
    let out = dir.path().join("first");
    let o = eval("org/tiny", &data, &out, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(eval_outputs(&out), eval_outputs(&reference_dir));
    // safetensors is preferred, so the .bin is not fetched.
    assert_eq!(
        downloads(&requests),
        [
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt"
        ]
    );
    let snapshot = home
        .join("hub/models--org--tiny/snapshots")
        .join(MODEL_COMMIT);
    assert_eq!(
        std::fs::read_to_string(home.join("hub/models--org--tiny/refs/main")).unwrap(),
        MODEL_COMMIT
    );
    assert!(std::fs::symlink_metadata(snapshot.join("config.json"))
        .unwrap()
        .file_type()
        .is_symlink());

    // Everything cached: the repo is asked for its commit, nothing is downloaded.
    let o = eval("org/tiny", &data, &dir.path().join("second"), &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(downloads(&requests).is_empty());
    // One file lost: only it comes back.
    std::fs::remove_file(snapshot.join("vocab.txt")).unwrap();
    let o = eval("org/tiny", &data, &dir.path().join("third"), &env);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(downloads(&requests), ["vocab.txt"]);
    // Offline after that: the cache alone serves, and the stand-in is not asked.
    let mut offline = env.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let o = eval("org/tiny", &data, &dir.path().join("fourth"), &offline);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(requests.lock().unwrap().is_empty());
}

/// `qa` as [`qa`] does, killed and failed after 60 s: a hang fails instead of stalling.
fn qa_bounded(args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::io::Read;
    let mut command = qa_command(args, env);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("qa runs");
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("qa {args:?} hung: killed after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap(),
    }
}

#[test]
fn hostile_snapshot_links_and_refs_never_hang_and_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let home = hf_home(dir.path());
    let offline = [("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let squad = fixture("squad.json");
    let out = dir.path().join("out");
    let mut args = vec![
        "eval",
        "--model",
        "org/tiny",
        "--output-dir",
        out.to_str().unwrap(),
    ];
    args.extend(["--data", squad.to_str().unwrap()]);
    args.extend(WINDOWS);
    let repo = home.join("hub/models--org--tiny");
    let snapshot = repo.join("snapshots").join(MODEL_COMMIT);
    // Loop links beside the model: not needed, not followed, the model loads.
    std::os::unix::fs::symlink(".", snapshot.join("l1")).unwrap();
    std::os::unix::fs::symlink(".", snapshot.join("l2")).unwrap();
    std::os::unix::fs::symlink("../../../../..", snapshot.join("up")).unwrap();
    let o = qa_bounded(&args, &offline);
    assert!(o.status.success(), "{}", stderr(&o));

    // A needed file whose link loops, or leaves the repo's cache folder: named, one line.
    let vocab = snapshot.join("vocab.txt");
    std::fs::remove_file(&vocab).unwrap();
    std::os::unix::fs::symlink("vocab.txt", &vocab).unwrap();
    let o = qa_bounded(&args, &offline);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains(&format!("{} cannot be used", vocab.display()))
            && e.contains("loops"),
        "{e}"
    );
    std::fs::remove_file(&vocab).unwrap();
    std::os::unix::fs::symlink(tiny_model().join("vocab.txt"), &vocab).unwrap();
    let o = qa_bounded(&args, &offline);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains(&format!("{} cannot be used", vocab.display()))
            && e.contains("points outside the repo's cache folder"),
        "{e}"
    );
    std::fs::remove_file(&vocab).unwrap();

    // refs/main: garbage, empty, a hash without a snapshot.
    let refs_main = repo.join("refs/main");
    for (bytes, says) in [
        (
            &b"hello\n"[..],
            "does not hold a commit hash (40 hex digits) but \"hello\"",
        ),
        (
            b"\x00\xfe\xff",
            "does not hold a commit hash (40 hex digits) but \"\\x00\\xfe\\xff\"",
        ),
        (b"", "is empty"),
    ] {
        std::fs::write(&refs_main, bytes).unwrap();
        let o = qa_bounded(&args, &offline);
        let e = stderr(&o);
        assert!(
            !o.status.success()
                && e.contains(&format!("{} {says}", refs_main.display()))
                && !e.contains("not in the Hugging Face cache"),
            "{bytes:?}: {e}"
        );
    }
    std::fs::write(&refs_main, DATASET_COMMIT).unwrap();
    let o = qa_bounded(&args, &offline);
    let e = stderr(&o);
    assert!(
        !o.status.success()
            && e.contains(&format!(
                "{} names commit {DATASET_COMMIT}, but there is no snapshot folder {}",
                refs_main.display(),
                repo.join("snapshots").join(DATASET_COMMIT).display()
            )),
        "{e}"
    );
}
