//! `qa train` data-parallel on loopback: two CPU peers in one process (`--devices cpu,cpu`) and
//! two processes joined as nodes (`--nnodes 2`) train the weights one device trains with the
//! same global batch; a killed node is named by the other within a minute; nodes started with
//! different settings are refused, on both sides, before they train.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use qa_model::weights::WeightFile;
use qa_testkit::shared_dir;

fn qa_command(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qa"));
    command.args(args).env_remove("RUST_LOG");
    command
}

fn run(args: &[String]) -> Output {
    qa_command(args).output().unwrap()
}

fn spawn(args: &[String]) -> Child {
    qa_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The tiny golden BERT without dropout, so that runs are comparable weight for weight.
fn model_without_dropout(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(shared_dir().join("golden/tiny-bert-qa")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let path = model.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&path, config.to_string()).unwrap();
    model
}

/// 3 COVID-QA questions cut into 64-token windows, AdamW made linear in the gradient (ε = 1),
/// `steps` steps, written to `out`.
fn train_args(model: &Path, out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let dev = shared_dir().join("data/covid-qa/dev.json");
    let mut args: Vec<String> = [
        "train",
        "--model-name-or-path",
        model.to_str().unwrap(),
        "--train-file",
        dev.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
        "--max-train-samples",
        "3",
        "--learning-rate",
        "0.5",
        "--adam-epsilon",
        "1",
        "--logging-steps",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--max-steps".to_string(), steps.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let a = WeightFile::read(&a.join("model.safetensors")).unwrap();
    let b = WeightFile::read(&b.join("model.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    a.tensors
        .iter()
        .flat_map(|(name, t)| {
            t.data
                .iter()
                .zip(&b.tensors[name].data)
                .map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// A master port with the ports after it (tensor ports of 2 nodes, the liveness ports of runs of
/// 2 and 3 nodes) free.
fn free_ports() -> u16 {
    for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if base < 60000
            && (0..5).all(|i| std::net::TcpListener::bind(("0.0.0.0", base + i)).is_ok())
        {
            return base;
        }
    }
    panic!("no 5 free ports in a row");
}

fn two_nodes(model: &Path, out: &Path, extra: &[&str]) -> (Output, Output) {
    let port = free_ports().to_string();
    let node = |rank: &str| {
        let mut flags = vec!["--nnodes", "2", "--node-rank", rank, "--master-port", &port];
        flags.extend(extra);
        spawn(&train_args(model, out, 4, &flags))
    };
    let second = node("1");
    let first = node("0");
    (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    )
}

#[test]
fn peers_in_one_process_and_on_two_nodes_train_as_one_device() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    for accumulation in ["1", "2"] {
        let one = dir.path().join(format!("one-{accumulation}"));
        let o = run(&train_args(
            &model,
            &one,
            4,
            &[
                "--per-device-train-batch-size",
                "4",
                "--gradient-accumulation-steps",
                accumulation,
            ],
        ));
        assert!(o.status.success(), "{}", stderr(&o));

        let threads = dir.path().join(format!("threads-{accumulation}"));
        let o = run(&train_args(
            &model,
            &threads,
            4,
            &[
                "--per-device-train-batch-size",
                "2",
                "--gradient-accumulation-steps",
                accumulation,
                "--devices",
                "cpu,cpu",
            ],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
        let results: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(threads.join("train_results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(results["world_size"], 2);
        // The model card lists the devices as the Trainer's does.
        let card = std::fs::read_to_string(threads.join("README.md")).unwrap();
        let total = 4 * accumulation.parse::<usize>().unwrap();
        for line in [
            "- distributed_type: multi-CPU".to_string(),
            "- num_devices: 2".to_string(),
            format!("- total_train_batch_size: {total}"),
            "- total_eval_batch_size: 16".to_string(),
        ] {
            assert!(card.contains(&line), "{line} not in the card:\n{card}");
        }

        let nodes = dir.path().join(format!("nodes-{accumulation}"));
        let (first, second) = two_nodes(
            &model,
            &nodes,
            &[
                "--per-device-train-batch-size",
                "2",
                "--gradient-accumulation-steps",
                accumulation,
            ],
        );
        assert!(first.status.success(), "node 0: {}", stderr(&first));
        assert!(second.status.success(), "node 1: {}", stderr(&second));
        assert!(
            String::from_utf8_lossy(&second.stdout).trim().is_empty(),
            "node 1 prints nothing on stdout"
        );

        let (in_process, across_nodes) = (
            max_weight_diff(&one, &threads),
            max_weight_diff(&one, &nodes),
        );
        eprintln!(
            "accumulation {accumulation}: 1×4 vs 2 threads × 2: {in_process:e}; vs 2 nodes × 2: \
             {across_nodes:e}"
        );
        assert!(in_process < 1e-5, "{in_process}");
        assert!(across_nodes < 1e-5, "{across_nodes}");
        assert!(max_weight_diff(&one, &shared_dir().join("golden/tiny-bert-qa")) > 1e-2);
    }
}

#[test]
fn a_killed_node_is_named_by_the_other_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let out = dir.path().join("run");
    let port = free_ports().to_string();
    let node = |rank: &str| {
        spawn(&train_args(
            &model,
            &out,
            100_000,
            &[
                "--per-device-train-batch-size",
                "2",
                "--nnodes",
                "2",
                "--node-rank",
                rank,
                "--master-port",
                &port,
            ],
        ))
    };
    let mut second = node("1");
    let mut first = node("0");
    // Training is under way once rank 0 has logged a step.
    let started = Instant::now();
    while std::fs::read_to_string(out.join("train_log.jsonl")).map_or(true, |t| t.is_empty()) {
        if let Some(status) = first.try_wait().unwrap() {
            let o = first.wait_with_output().unwrap();
            panic!("node 0 ended before training ({status}): {}", stderr(&o));
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill().unwrap();
    let killed_at = Instant::now();
    let o = first.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let message = stderr(&o);
    eprintln!(
        "node 0 exited after {waited:?}: {}",
        message.lines().last().unwrap_or("")
    );
    assert!(!o.status.success());
    assert!(waited < Duration::from_secs(60), "{waited:?}");
    assert!(
        message.contains("node 1 (127.0.0.1) closed its connection"),
        "{message}"
    );
    let _ = second.wait();
}

#[test]
fn a_node_that_never_meets_the_others_stops_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let port = free_ports().to_string();
    let o = run(&train_args(
        &model,
        &dir.path().join("run"),
        4,
        &[
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--master-port",
            &port,
            "--ddp-timeout",
            "3",
        ],
    ));
    let message = stderr(&o);
    assert!(!o.status.success());
    assert!(
        message.contains(&format!(
            "node 0 cannot be reached at 127.0.0.1:{}",
            port.parse::<u16>().unwrap() + 3
        )),
        "{message}"
    );
    // And bad topology flags are refused before anything starts.
    let o = run(&train_args(
        &model,
        &dir.path().join("run"),
        4,
        &["--nnodes", "2", "--node-rank", "2"],
    ));
    assert!(
        stderr(&o).contains("--node-rank 2 must be below --nnodes 2"),
        "{}",
        stderr(&o)
    );
}

/// Waits for `child` at most `limit`: a node that hangs is killed and fails the test.
fn wait_at_most(mut child: Child, limit: Duration, name: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("{name} still ran after {limit:?}: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Two nodes, the flags of node `r` followed by `extra[r]`, each waited for at most `limit`.
fn two_nodes_with(
    model: &Path,
    out: &Path,
    extra: [&[&str]; 2],
    limit: Duration,
) -> (Output, Output) {
    let port = free_ports().to_string();
    let node = |rank: usize| {
        let rank_flag = rank.to_string();
        let mut flags = vec!["--node-rank", &rank_flag, "--master-port", &port];
        flags.extend(extra[rank]);
        spawn(&train_args(model, out, 4, &flags))
    };
    let second = node(1);
    let first = node(0);
    (
        wait_at_most(first, limit, "node 0"),
        wait_at_most(second, limit, "node 1"),
    )
}

#[test]
fn nodes_started_with_other_devices_are_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let out = dir.path().join("run");
    let started = Instant::now();
    // One device on node 0, two on node 1: burn-collective would pair unrelated tensors.
    let (first, second) = two_nodes_with(
        &model,
        &out,
        [
            &["--nnodes", "2", "--ddp-timeout", "60"],
            &[
                "--nnodes",
                "2",
                "--ddp-timeout",
                "60",
                "--devices",
                "cpu,cpu",
            ],
        ],
        Duration::from_secs(120),
    );
    eprintln!("both nodes ended after {:?}", started.elapsed());
    let expected = "node 1 runs with --devices 2 but node 0 with --devices 1: start every node \
                    with the same settings";
    for (name, o) in [("node 0", &first), ("node 1", &second)] {
        let message = stderr(o);
        assert_eq!(o.status.code(), Some(1), "{name}: {message}");
        assert!(message.contains(expected), "{name}: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
    }
    assert!(
        !out.join("train_log.jsonl").exists()
            || std::fs::read_to_string(out.join("train_log.jsonl"))
                .unwrap()
                .is_empty(),
        "no step was trained"
    );
}

#[test]
fn nodes_started_with_other_node_counts_are_told_so_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_without_dropout(dir.path());
    let started = Instant::now();
    // Node 1 thinks the run has 3 nodes, so it looks for node 0's liveness port elsewhere.
    let (first, second) = two_nodes_with(
        &model,
        &dir.path().join("run"),
        [
            &["--nnodes", "2", "--ddp-timeout", "20"],
            &["--nnodes", "3", "--ddp-timeout", "600"],
        ],
        Duration::from_secs(120),
    );
    eprintln!("both nodes ended after {:?}", started.elapsed());
    let (first, second) = (stderr(&first), stderr(&second));
    assert!(
        second.contains("node 0 likely runs with another --nnodes"),
        "node 1: {second}"
    );
    assert!(
        first.contains("with the same --master-addr, --master-port and --nnodes (2)"),
        "node 0: {first}"
    );
}
