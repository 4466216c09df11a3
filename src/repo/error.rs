//! The engine's error type. Each variant carries enough context for a
//! one-line message; the CLI maps variants to exit codes.

use std::io;

use super::backend::BackendError;
use super::format::FormatError;
use super::id::Id;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{what}: {source}")]
    Format { what: String, source: FormatError },
    #[error("no repository at {0} (create one with `snap init`)")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    #[error("wrong password: no key of this repository opens with it")]
    WrongPassword,
    #[error("the master key does not open this repository")]
    WrongMasterKey,
    #[error("no snapshot matches {0:?} (list them with `snap snapshots`)")]
    SnapshotNotFound(String),
    #[error("{0:?} matches more than one snapshot; give more digits")]
    AmbiguousSnapshot(String),
    #[error("{0}")]
    PathNotFound(String),
    #[error("{0}")]
    Locked(String),
    #[error("blob {0} is not in the index: the repository is missing data (run `snap check`)")]
    MissingBlob(Id),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    SourceFailed(String),
    #[error("refused: the repository was opened with an append-only key, which cannot {0}; use a full-access key")]
    AppendOnly(String),
}

impl Error {
    pub fn format(what: impl Into<String>, source: FormatError) -> Error {
        Error::Format { what: what.into(), source }
    }
    pub fn io(path: impl std::fmt::Display, source: io::Error) -> Error {
        Error::Io { path: path.to_string(), source }
    }
    /// Damaged or missing repository data, as opposed to bad input or a
    /// passing I/O failure.
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Format { .. } | Error::MissingBlob(_))
            || matches!(self, Error::Backend(b) if b.is_not_found())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
