//! Hostile Hub caches, offline: symbolic links that loop or leave the repo's cache folder, and
//! `refs/main` files that do not hold a commit hash. Each resolution runs under a time bound, so a
//! hang fails the test instead of stalling it.
#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use qa_data::hub::{self, HubError, HubSettings, Split};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "vocab.txt"];

fn offline(hub: &Path) -> HubSettings {
    HubSettings {
        hf_home: hub.join(".."),
        cache_dir: hub.to_path_buf(),
        endpoint: None,
        token: None,
        offline: true,
    }
}

/// A repo folder in the Hub layout: each file a blob, linked from `snapshots/<COMMIT>/` with a
/// relative link as the Hub client makes; `refs/main` the commit. Returns the snapshot.
fn cache_repo(hub: &Path, folder: &str, files: &[&str]) -> PathBuf {
    let repo = hub.join(folder);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    let snapshot = repo.join("snapshots").join(COMMIT);
    for (i, name) in files.iter().enumerate() {
        let blob = format!("blob{i}");
        std::fs::write(repo.join("blobs").join(&blob), format!("{name} bytes")).unwrap();
        let link = snapshot.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        symlink(
            PathBuf::from("../".repeat(depth)).join("blobs").join(blob),
            link,
        )
        .unwrap();
    }
    snapshot
}

fn model_cache(root: &Path) -> (PathBuf, PathBuf) {
    let hub = root.join("hub");
    let snapshot = cache_repo(&hub, "models--org--x", &MODEL_FILES);
    (hub, snapshot)
}

/// `f` on another thread; the test fails when it takes over 60 s (a hang).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("hub resolution hung (over 60 s) or panicked")
}

fn model(hub: &Path) -> Result<PathBuf, HubError> {
    let settings = offline(hub);
    bounded(move || hub::resolve_model("org/x", None, &settings))
}

fn model_error(hub: &Path) -> String {
    let e = model(hub).expect_err("a bad cache must not resolve");
    let message = e.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

#[test]
fn loop_links_beside_a_valid_model_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, snapshot) = model_cache(dir.path());
    // Each of these, followed, makes the snapshot endless (2^40 paths through l1 and l2).
    symlink(".", snapshot.join("l1")).unwrap();
    symlink(".", snapshot.join("l2")).unwrap();
    symlink("..", snapshot.join("up")).unwrap();
    symlink("../../../..", snapshot.join("far")).unwrap();
    symlink("/", snapshot.join("root")).unwrap();
    std::fs::create_dir(snapshot.join("sub")).unwrap();
    symlink("..", snapshot.join("sub/back")).unwrap();
    symlink(".", snapshot.join("sub/here")).unwrap();
    // Not needed: unusable links beside the model do not stop it.
    symlink("/etc/hostname", snapshot.join("README.md")).unwrap();
    symlink("self", snapshot.join("self")).unwrap();
    assert_eq!(model(&hub).unwrap(), snapshot);
}

#[test]
fn a_needed_file_whose_link_loops_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, snapshot) = model_cache(dir.path());
    let config = snapshot.join("config.json");
    std::fs::remove_file(&config).unwrap();
    symlink("config.json", &config).unwrap();
    let e = model_error(&hub);
    assert!(
        e.contains(&format!("{} cannot be used", config.display()))
            && e.contains("loops (more than 40 links deep)"),
        "{e}"
    );
    // Two links into each other, through blobs/.
    std::fs::remove_file(&config).unwrap();
    symlink("../../blobs/a", &config).unwrap();
    let blobs = hub.join("models--org--x/blobs");
    symlink("b", blobs.join("a")).unwrap();
    symlink("a", blobs.join("b")).unwrap();
    let e = model_error(&hub);
    assert!(e.contains("config.json") && e.contains("loops"), "{e}");
}

#[test]
fn a_needed_file_linking_out_of_the_repo_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, snapshot) = model_cache(dir.path());
    // A valid file, but outside: absolute, relative, and another repo's blob.
    let outside = dir.path().join("outside.json");
    std::fs::write(&outside, "{}").unwrap();
    cache_repo(&hub, "models--org--other", &["config.json"]);
    let config = snapshot.join("config.json");
    for target in [
        outside.clone(),
        PathBuf::from("../../../../outside.json"),
        PathBuf::from("../../../models--org--other/blobs/blob0"),
    ] {
        std::fs::remove_file(&config).unwrap();
        symlink(&target, &config).unwrap();
        let e = model_error(&hub);
        assert!(
            e.contains(&format!("{} cannot be used", config.display()))
                && e.contains("points outside the repo's cache folder")
                && e.contains(&target.display().to_string()),
            "{target:?}: {e}"
        );
    }
    // An absolute link into the repo's own blobs is fine.
    std::fs::remove_file(&config).unwrap();
    symlink(hub.join("models--org--x/blobs/blob0"), &config).unwrap();
    assert_eq!(model(&hub).unwrap(), snapshot);
}

#[test]
fn a_snapshot_folder_linking_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, snapshot) = model_cache(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    std::fs::rename(&snapshot, &elsewhere).unwrap();
    symlink(&elsewhere, &snapshot).unwrap();
    let e = model_error(&hub);
    assert!(
        e.contains(&snapshot.display().to_string()) && e.contains("points outside"),
        "{e}"
    );
    std::fs::remove_file(&snapshot).unwrap();
    symlink(COMMIT, &snapshot).unwrap();
    let e = model_error(&hub);
    assert!(e.contains(COMMIT) && e.contains("loops"), "{e}");
}

#[test]
fn refs_main_without_a_commit_hash_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = model_cache(dir.path());
    let refs_main = hub.join("models--org--x/refs/main");
    let named = format!("{}", refs_main.display());
    for (bytes, says) in [
        (&b""[..], "is empty".to_string()),
        (b" \n\t", "is empty".to_string()),
        (
            b"hello\n",
            "does not hold a commit hash (40 hex digits) but \"hello\"".to_string(),
        ),
        (
            b"\xff\x00\x80binary",
            "does not hold a commit hash (40 hex digits) but \"\\xff\\x00\\x80binary\"".to_string(),
        ),
        (
            format!("{COMMIT}0").as_bytes(),
            format!("but \"{COMMIT}0\""),
        ),
        (b"../../../etc", "but \"../../../etc\"".to_string()),
    ] {
        std::fs::write(&refs_main, bytes).unwrap();
        let e = model_error(&hub);
        assert!(
            e.contains(&named) && e.contains(&says) && !e.contains("not in the"),
            "{bytes:?}: {e}"
        );
    }
    // A long garbage ref is shown cut.
    std::fs::write(&refs_main, "z".repeat(10_000)).unwrap();
    let e = model_error(&hub);
    assert!(e.contains(&format!("\"{}…\"", "z".repeat(60))), "{e}");
    // A hash with no snapshot folder: the hash and the folder are named.
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    std::fs::write(&refs_main, format!("{other}\n")).unwrap();
    let e = model_error(&hub);
    let folder = hub.join("models--org--x/snapshots").join(other);
    assert!(
        e.contains(&format!("{named} names commit {other}"))
            && e.contains(&format!("no snapshot folder {}", folder.display())),
        "{e}"
    );
    // A trailing newline around a good hash is fine.
    std::fs::write(&refs_main, format!("{COMMIT}\n")).unwrap();
    assert!(model(&hub).is_ok());
}

#[test]
fn refs_main_that_is_not_a_plain_file_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = model_cache(dir.path());
    let refs_main = hub.join("models--org--x/refs/main");
    // An endless file outside the cache, a loop, a fifo (reading it would block forever).
    std::fs::remove_file(&refs_main).unwrap();
    symlink("/dev/zero", &refs_main).unwrap();
    let e = model_error(&hub);
    assert!(
        e.contains("refs/main") && e.contains("points outside"),
        "{e}"
    );
    std::fs::remove_file(&refs_main).unwrap();
    symlink("main", &refs_main).unwrap();
    let e = model_error(&hub);
    assert!(e.contains("refs/main") && e.contains("loops"), "{e}");
    std::fs::remove_file(&refs_main).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&refs_main)
        .status()
        .unwrap();
    assert!(made.success());
    let e = model_error(&hub);
    assert!(e.contains("refs/main") && e.contains("not a file"), "{e}");
}

#[test]
fn revisions_never_reach_out_of_the_snapshots_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _) = model_cache(dir.path());
    for revision in ["..", ".", "../..", "a/../..", "/etc"] {
        let settings = offline(&hub);
        let got = bounded(move || hub::resolve_model("org/x", Some(revision), &settings));
        assert!(
            matches!(got, Err(HubError::NotCached { .. })),
            "{revision}: {got:?}"
        );
    }
    // A commit hash revision without a ref still finds its snapshot.
    let settings = offline(&hub);
    assert!(bounded(move || hub::resolve_model("org/x", Some(COMMIT), &settings)).is_ok());
}

#[test]
fn datasets_with_loop_links_list_their_splits() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snapshot = cache_repo(
        &hub,
        "datasets--org--d",
        &[
            "plain_text/train-00000-of-00001.parquet",
            "plain_text/validation-00000-of-00001.parquet",
        ],
    );
    symlink(".", snapshot.join("plain_text/l1")).unwrap();
    symlink("..", snapshot.join("plain_text/l2")).unwrap();
    symlink("../../../..", snapshot.join("up")).unwrap();
    let settings = offline(&hub);
    let files = bounded(move || {
        hub::resolve_dataset(
            "org/d",
            None,
            None,
            &[Split::Train, Split::Validation],
            &settings,
        )
    })
    .unwrap();
    assert_eq!(
        files.split(Split::Validation).unwrap(),
        [snapshot.join("plain_text/validation-00000-of-00001.parquet")]
    );
    // A data file linking out of the repo folder is named, not read.
    let train = snapshot.join("plain_text/train-00000-of-00001.parquet");
    std::fs::remove_file(&train).unwrap();
    symlink("/etc/hostname", &train).unwrap();
    let settings = offline(&hub);
    let e = bounded(move || hub::resolve_dataset("org/d", None, None, &[Split::Train], &settings))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&train.display().to_string()) && e.contains("points outside"),
        "{e}"
    );
}
