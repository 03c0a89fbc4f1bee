//! Repository hygiene that review would otherwise have to catch: every Rust file says what it
//! is for in a `//!` header, and ARCHITECTURE.md names only files that exist.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// Every file below `dir` (skipping build output, hidden folders and the vendored crates, which
/// stay as published) whose name ends in `ext`.
fn files_with_extension(dir: &Path, ext: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable folder entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" || path == repo_root().join("vendor") {
            continue;
        }
        if path.is_dir() {
            files_with_extension(&path, ext, found);
        } else if name.ends_with(ext) {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let root = repo_root();
    let mut files = Vec::new();
    files_with_extension(&root, ".rs", &mut files);
    assert!(files.len() > 40, "found only {} .rs files", files.len());
    let lacking: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).expect("readable source file");
            !text
                .lines()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.starts_with("//!"))
        })
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        lacking.is_empty(),
        "these files do not open with a `//!` line saying what they are for: {lacking:?}"
    );
}

#[test]
fn architecture_md_names_only_files_that_exist() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut all_files = Vec::new();
    files_with_extension(&root, "", &mut all_files);
    let names: std::collections::HashSet<String> = all_files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    // Code spans that look like paths: `crates/qa-data/src/load.rs`, `bench/gpu/`, `trainer.rs`.
    let looks_like_file = |s: &str| {
        [".rs", ".md", ".sh", ".py", ".toml"]
            .iter()
            .any(|ext| s.ends_with(ext))
    };
    // Folders the product writes, not files of the repository.
    let written_by_runs = ["checkpoint-STEP/", "runs/"];
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in text.split('`').skip(1).step_by(2) {
        let span = span.trim();
        // `.rs` (an extension) and `//!` (a comment marker) are no paths.
        if written_by_runs.contains(&span)
            || span.starts_with('.')
            || span.starts_with('/')
            || span.contains(' ')
            || span.contains("::")
            || span.contains('*')
            || span.contains('{')
        {
            continue;
        }
        let exists = if span.contains('/') && !span.starts_with("../") {
            root.join(span.trim_end_matches('/')).exists()
        } else if looks_like_file(span) {
            names.contains(span)
        } else {
            continue;
        };
        checked += 1;
        if !exists {
            missing.push(span.to_string());
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found in ARCHITECTURE.md"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that are not in the repo: {missing:?}"
    );
}

#[test]
fn crate_docs_list_every_module() {
    let root = repo_root();
    let mut unlisted = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let lib = entry.expect("crate folder").path().join("src/lib.rs");
        let Ok(text) = std::fs::read_to_string(&lib) else {
            continue;
        };
        let docs: String = text
            .lines()
            .filter(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for line in text.lines() {
            let Some(rest) = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
            else {
                continue;
            };
            let module = rest.trim_end_matches(';').trim();
            checked += 1;
            if !docs.contains(&format!("`{module}`")) {
                unlisted.push(format!("{}: {module}", lib.display()));
            }
        }
    }
    assert!(checked > 30, "only {checked} modules found");
    assert!(
        unlisted.is_empty(),
        "modules missing from their crate's `//!` docs: {unlisted:?}"
    );
}
