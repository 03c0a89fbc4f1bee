//! Fault injection: the `qa` binary killed at arbitrary points of a training run, or out of
//! disk while writing a checkpoint. What must hold: a resumed run ends with the weights of an
//! uninterrupted one, and a failed write leaves the previous checkpoint intact and says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use qa_testkit::shared_dir;

/// `qa train` on 2 COVID-QA questions (64-token windows), 8 steps, a checkpoint every 2.
fn train_args(out: &Path) -> Vec<String> {
    let data = shared_dir().join("data/covid-qa/dev.json");
    [
        "train",
        "--model-name-or-path",
        shared_dir().join("golden/tiny-bert-qa").to_str().unwrap(),
        "--train-file",
        data.to_str().unwrap(),
        "--max-train-samples",
        "2",
        "--max-seq-length",
        "64",
        "--doc-stride",
        "16",
        "--per-device-train-batch-size",
        "2",
        "--learning-rate",
        "0.001",
        "--max-steps",
        "8",
        "--save-steps",
        "2",
        "--logging-steps",
        "1",
        "--output-dir",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn qa(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_qa"));
    command.args(args).env("RUST_LOG", "warn");
    command
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn finished(out: &Path) -> Output {
    let o = qa(&train_args(out)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn model_bytes(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).expect("a final model")
}

/// Killed (SIGKILL) at points spread over a run — while tokenizing, training, writing a
/// checkpoint or the final model — and started again, a run ends with the uninterrupted run's
/// weights, bit for bit, and its log holds every step once.
#[test]
fn a_run_killed_anywhere_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let started = Instant::now();
    finished(&reference);
    let duration = started.elapsed();
    let want = model_bytes(&reference);
    // Fixed points (a repeatable "random" spread): early, middle, late, and at the very end.
    for (i, fraction) in [0.15, 0.4, 0.6, 0.8, 0.95].into_iter().enumerate() {
        let out = dir.path().join(format!("killed-{i}"));
        let mut child = qa(&train_args(&out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(duration.mul_f64(fraction));
        let _ = child.kill();
        child.wait().unwrap();
        let o = finished(&out);
        assert_eq!(
            model_bytes(&out),
            want,
            "killed at {fraction} of the run: {}",
            stderr(&o)
        );
        let log = std::fs::read_to_string(out.join("train_log.jsonl")).unwrap();
        let steps: Vec<u64> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("loss").is_some())
            .filter_map(|v| v["step"].as_u64())
            .collect();
        assert_eq!(steps, (1..=8).collect::<Vec<_>>(), "killed at {fraction}");
    }
}

/// Every file of a folder, by name.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Out of disk while writing a checkpoint (a 1 MiB file size limit, with `SIGXFSZ` ignored so
/// that writes fail with `EFBIG` as on a full disk): the run stops naming the checkpoint it
/// could not write and the one that is intact, leaves that one untouched and no half-written
/// folder, and the same command later resumes to the uninterrupted run's weights.
#[test]
fn a_full_disk_while_checkpointing_leaves_the_previous_checkpoint_intact() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    finished(&reference);
    let want = model_bytes(&reference);

    // The output folder as a run leaves it after checkpoint-2.
    let out = dir.path().join("out");
    finished(&out);
    for step in [4, 6, 8] {
        std::fs::remove_dir_all(out.join(format!("checkpoint-{step}"))).unwrap();
    }
    let intact = files(&out.join("checkpoint-2"));

    let mut limited = qa(&train_args(&out));
    // SAFETY: between fork and exec, only async-signal-safe calls (signal, setrlimit).
    unsafe {
        limited.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = limited.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writing checkpoint-4 failed"), "{err}");
    assert!(
        err.contains("checkpoint-2 is intact: run the same command again to resume from it"),
        "{err}"
    );
    assert_eq!(files(&out.join("checkpoint-2")), intact);
    assert!(!out.join("checkpoint-4").exists());
    assert!(!out.join(".checkpoint-4.tmp").exists());

    let o = finished(&out);
    assert_eq!(model_bytes(&out), want, "{}", stderr(&o));
}

/// `qa serve` under an address-space limit (its idle size + 320 MB) hit by eight 1 MB contexts
/// at once: it admits what its queued-bytes budget allows, refuses the rest with 503, and stays
/// up. (Without the budget, the same burst aborted it: `memory allocation of … bytes failed`.)
#[test]
fn a_server_under_a_memory_limit_refuses_a_burst_instead_of_aborting() {
    use std::io::{Read, Write};
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let model = shared_dir().join("golden/tiny-bert-qa");
    let mut server = qa(&[
        "serve".into(),
        "--model".into(),
        model.to_str().unwrap().into(),
        "--port".into(),
        port.to_string(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let address = format!("127.0.0.1:{port}");
    let request = |body: &str| -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(&address).ok()?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body.as_bytes()).ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        reply.get(9..12)?.parse().ok()
    };
    let small = serde_json::json!({"question": "Who?", "context": "Ann did."}).to_string();
    let started = Instant::now();
    while request(&small) != Some(200) {
        assert!(
            started.elapsed().as_secs() < 60,
            "the server never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The limit, set on the running server: its idle size plus 320 MB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    let idle_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let limit = (idle_kib << 10) + (320 << 20);
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct we pass and writes no old value (null).
    let set = unsafe {
        libc::prlimit(
            server.id() as libc::pid_t,
            libc::RLIMIT_AS,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());

    let context = "The committee met in Geneva on Tuesday and approved the budget. ".repeat(16_000);
    let big =
        serde_json::json!({"question": "Where did they meet?", "context": context}).to_string();
    assert!(big.len() > 1_000_000);
    let codes: Vec<Option<u16>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| request(&big))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let alive = server.try_wait().unwrap().is_none();
    let _ = server.kill();
    let _ = server.wait();
    assert!(alive, "the server died under the burst: {codes:?}");
    assert!(codes.contains(&Some(200)), "{codes:?}");
    assert!(codes.contains(&Some(503)), "{codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, Some(200 | 503))),
        "{codes:?}"
    );
}
