//! The store's one error type: what failed, with its source, in words an operator can act on.

use std::path::PathBuf;

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or database file could not be created or opened.
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused a statement (a full disk, a locked or corrupt file, ...).
    #[error("the store (SQLite) failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought to this version.
    #[error("cannot prepare the schema in {}: {source}", path.display())]
    Schema {
        /// The database file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<StoreError>,
    },
    /// A stored value could not be read back (or a value not written).
    #[error("a stored value is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored value does not say what this version expects.
    #[error("{0}")]
    Corrupt(String),
    /// The system's random source failed, so no secret was made.
    #[error("the system's random source failed: no {0} made")]
    Random(&'static str),
    /// The writer thread is gone (the coordinator is stopping, or it failed).
    #[error("the store writer stopped")]
    WriterStopped,
    /// The writer thread could not be started.
    #[error("cannot start the store writer: {0}")]
    Thread(#[source] std::io::Error),
    /// A report could not be committed; the probe keeps it and sends it again.
    #[error("cannot commit the report: {0}")]
    Commit(String),
    /// Probe key bindings could not be committed; their connections are refused and the
    /// probes connect again.
    #[error("cannot record the probe's key: {0}")]
    Bind(String),
    /// Enrolment's certificate could not be issued (nothing was written).
    #[error("cannot issue the probe's certificate: {0}")]
    Issue(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A store result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
