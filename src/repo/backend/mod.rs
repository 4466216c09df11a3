//! Where repository files live. A backend sees only names and opaque
//! (already encrypted) bytes; it never holds a key.
//!
//! Contract every backend keeps, and the engine relies on:
//! - `write` is atomic and durable: after it returns the file is complete
//!   and survives a crash; a reader never sees a partial file.
//! - Files other than `config` and locks are written once under a name
//!   derived from their content and never modified.
//! - `list` may omit files whose `write` has not returned.

mod cache;
mod local;
mod memory;
mod s3;

pub use cache::{default_cache_dir, store as store_cache_file, CachedBackend};
pub use local::{write_durably, LocalBackend};
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Location};

use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
}

impl FileKind {
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Unsupported(String),
}

impl BackendError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound(_))
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A file written piece by piece whose name is known only once it is
/// complete (a pack is named by the hash of its bytes). Nothing of it is
/// visible until `commit`; dropped uncommitted, it leaves nothing behind
/// (after a crash, at most a temporary file that listing ignores and
/// [`Backend::remove_staged_leftovers`] removes).
pub trait StagedFile: Send {
    fn append(&mut self, bytes: &[u8]) -> BackendResult<()>;
    /// Make the file durable and visible as `name`, as `write` would.
    fn commit(self: Box<Self>, name: &str) -> BackendResult<()>;
}

pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Prepare an empty repository location; fails if one already exists.
    fn create(&self) -> BackendResult<()>;
    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>>;
    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>>;
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>>;
    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64>;
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()>;
    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()>;
    /// Start a file to be written in pieces, where the backend can hold
    /// it outside memory; `None` tells the caller to buffer the bytes and
    /// `write` them whole.
    fn stage(&self, _kind: FileKind) -> BackendResult<Option<Box<dyn StagedFile>>> {
        Ok(None)
    }
    /// Remove what staged files interrupted by a crash left behind; returns
    /// how many. Only safe while no other process writes the repository.
    fn remove_staged_leftovers(&self) -> BackendResult<u64> {
        Ok(0)
    }
    /// Bytes free for new files, where the storage has such a limit.
    fn free_space(&self) -> Option<u64> {
        None
    }
    /// How many packs one save pipeline should upload at once: more where
    /// each write waits on a network round trip than on a local disk.
    fn parallel_writes(&self) -> usize {
        1
    }
    /// Whether reads cost a network round trip (and so are worth caching).
    fn is_remote(&self) -> bool {
        false
    }
    /// A local directory where metadata of this repository may be cached
    /// (see `CachedBackend`), if the backend has one.
    fn metadata_cache(&self) -> Option<&std::path::Path> {
        None
    }
}

/// What a repository opened with an append-only key sees: new files may be
/// written, but nothing but locks may be deleted and the config not
/// rewritten. A last line behind the engine's own checks, which refuse such
/// operations before they start.
pub struct AppendOnlyBackend(pub std::sync::Arc<dyn Backend>);

impl AppendOnlyBackend {
    fn refuse(what: &str) -> BackendError {
        BackendError::Unsupported(format!(
            "refused: the repository was opened with an append-only key, which cannot {what}"
        ))
    }
}

impl Backend for AppendOnlyBackend {
    fn location(&self) -> String {
        self.0.location()
    }
    fn create(&self) -> BackendResult<()> {
        self.0.create()
    }
    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
        self.0.list(kind)
    }
    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
        self.0.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
        self.0.read_range(kind, name, offset, length)
    }
    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
        self.0.size(kind, name)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
        if kind == FileKind::Config {
            return Err(Self::refuse("change the repository config"));
        }
        self.0.write(kind, name, data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
        if kind != FileKind::Lock {
            return Err(Self::refuse("delete repository files"));
        }
        self.0.delete(kind, name)
    }
    fn stage(&self, kind: FileKind) -> BackendResult<Option<Box<dyn StagedFile>>> {
        if kind == FileKind::Config {
            return Err(Self::refuse("change the repository config"));
        }
        self.0.stage(kind)
    }
    fn remove_staged_leftovers(&self) -> BackendResult<u64> {
        self.0.remove_staged_leftovers()
    }
    fn free_space(&self) -> Option<u64> {
        self.0.free_space()
    }
    fn parallel_writes(&self) -> usize {
        self.0.parallel_writes()
    }
    fn is_remote(&self) -> bool {
        self.0.is_remote()
    }
    fn metadata_cache(&self) -> Option<&std::path::Path> {
        self.0.metadata_cache()
    }
}

/// Open the backend a `--repo` string names: `s3:…` or a local directory.
/// A remote backend gets a local metadata cache in `cache` (if given).
pub fn open_location(location: &str, cache: Option<std::path::PathBuf>) -> BackendResult<Box<dyn Backend>> {
    if location.starts_with("s3:") {
        let s3 = Box::new(S3Backend::open(location)?);
        return Ok(match cache {
            Some(dir) => Box::new(CachedBackend::new(s3, dir)),
            None => s3,
        });
    }
    Ok(Box::new(LocalBackend::new(location)))
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The suite every backend must pass.
    use super::*;

    pub fn run(b: &dyn Backend) {
        b.create().unwrap();
        assert!(b.read(FileKind::Config, "config").unwrap_err().is_not_found());
        b.write(FileKind::Config, "config", b"cfg").unwrap();
        assert!(b.create().is_err(), "create must refuse an existing repository");
        assert_eq!(b.read(FileKind::Config, "config").unwrap(), b"cfg");
        b.write(FileKind::Config, "config", b"cfg2").unwrap();
        assert_eq!(b.read(FileKind::Config, "config").unwrap(), b"cfg2");

        let name = "ab".repeat(32);
        b.write(FileKind::Pack, &name, b"0123456789").unwrap();
        assert_eq!(b.read_range(FileKind::Pack, &name, 2, 3).unwrap(), b"234");
        assert!(b.read_range(FileKind::Pack, &name, 8, 5).is_err(), "short range reads must fail");
        assert_eq!(b.size(FileKind::Pack, &name).unwrap(), 10);
        let list = b.list(FileKind::Pack).unwrap();
        assert_eq!(list, vec![FileInfo { name: name.clone(), size: 10 }]);
        assert!(b.list(FileKind::Index).unwrap().is_empty());
        b.delete(FileKind::Pack, &name).unwrap();
        assert!(b.read(FileKind::Pack, &name).unwrap_err().is_not_found());
        assert!(b.delete(FileKind::Pack, &name).unwrap_err().is_not_found());
        for kind in [FileKind::Key, FileKind::Index, FileKind::Snapshot, FileKind::Lock] {
            b.write(kind, "f1", b"x").unwrap();
            assert_eq!(b.list(kind).unwrap().len(), 1);
        }
    }
}
