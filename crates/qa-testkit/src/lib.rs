//! Test support for the workspace's tests, benches and `xtask`: where the shared reference
//! files are. Never a dependency of a product crate, so it is no part of their API.

use std::path::{Path, PathBuf};

/// The `shared/` folder of reference files beside the repository (models, data, golden outputs),
/// or `$QA_SHARED_DIR` when set.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QA_SHARED_DIR") {
        return dir.into();
    }
    // crates/qa-testkit → repository root → its parent, where `shared/` lives.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}
