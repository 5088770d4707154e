//! The binaries under test and the repository's files.

use std::path::{Path, PathBuf};

/// The coordinator binary under test.
pub(crate) const COORDINATOR: &str = env!("CARGO_BIN_EXE_cemwatch");

/// The probe binary, beside the coordinator's (built by `cargo test --workspace`).
pub(crate) fn probe_bin() -> PathBuf {
    let path = Path::new(COORDINATOR)
        .with_file_name(format!("cemwatch-probe{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it), or `cargo build -p cemwatch-probe` first",
        path.display()
    );
    path
}

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the coordinator crate lives in the workspace")
        .to_path_buf()
}

/// `deploy/`.
pub(crate) fn deploy() -> PathBuf {
    repo().join("deploy")
}

/// A file's text, or a failure naming it.
pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
