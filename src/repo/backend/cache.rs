//! A local cache of a remote repository's metadata files (keys, index files,
//! snapshot manifests), so `snapshots`, `ls` and the dedup index of `create`
//! do not download again what has not changed.
//!
//! These files are named by the hash of their bytes and never modified, so a
//! cached copy is used only if it still hashes to its name; a bad or partial
//! copy is simply fetched again. Listing the repository drops cached files
//! the repository no longer has (forgotten snapshots, index files replaced
//! by prune). The cache holds the same sealed bytes as the repository:
//! nothing in it is readable without the key. Losing it costs only time.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Backend, BackendResult, FileInfo, FileKind, StagedFile};
use crate::repo::id::Id;

pub struct CachedBackend {
    inner: Box<dyn Backend>,
    dir: PathBuf,
}

/// The cache directory for a repository location: `$SNAP_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/snap`, else `~/.cache/snap`, then one folder per
/// location (named by a hash of it, so no location text lands on disk).
pub fn default_cache_dir(location: &str) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("SNAP_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("snap")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("snap")))?;
    Some(base.join(&blake3::hash(location.as_bytes()).to_hex()[..32]))
}

fn cacheable(kind: FileKind) -> bool {
    matches!(kind, FileKind::Key | FileKind::Index | FileKind::Snapshot)
}

/// Write a cache file by temp name and rename, so a reader never sees a
/// partial one. No fsync: a cache file lost in a crash is fetched again.
pub fn store(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(".tmp-{}", Id::random().short()));
    if fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, path)).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

impl CachedBackend {
    pub fn new(inner: Box<dyn Backend>, dir: PathBuf) -> CachedBackend {
        CachedBackend { inner, dir }
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(name)
    }

    fn cached(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path(kind, name)).ok()?;
        (Id::of_bytes(&bytes).to_hex() == name).then_some(bytes)
    }

    fn keep(&self, kind: FileKind, name: &str, bytes: &[u8]) {
        if Id::of_bytes(bytes).to_hex() == name {
            store(&self.path(kind, name), bytes);
        }
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> BackendResult<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
        let listed = self.inner.list(kind)?;
        if cacheable(kind) {
            let present: std::collections::HashSet<&str> = listed.iter().map(|f| f.name.as_str()).collect();
            if let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !present.contains(name.as_str()) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(listed)
    }

    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
        if !cacheable(kind) {
            return self.inner.read(kind, name);
        }
        if let Some(bytes) = self.cached(kind, name) {
            return Ok(bytes);
        }
        let bytes = self.inner.read(kind, name)?;
        self.keep(kind, name, &bytes);
        Ok(bytes)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(kind, name, offset, length)
    }

    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
        self.inner.size(kind, name)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.inner.write(kind, name, data)?;
        if cacheable(kind) {
            self.keep(kind, name, data);
        }
        Ok(())
    }

    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
        let result = self.inner.delete(kind, name);
        if cacheable(kind) {
            let _ = fs::remove_file(self.path(kind, name));
        }
        result
    }

    fn stage(&self, kind: FileKind) -> BackendResult<Option<Box<dyn StagedFile>>> {
        // A staged file's bytes never pass through here to be cached.
        if cacheable(kind) {
            return Ok(None);
        }
        self.inner.stage(kind)
    }

    fn remove_staged_leftovers(&self) -> BackendResult<u64> {
        self.inner.remove_staged_leftovers()
    }

    fn free_space(&self) -> Option<u64> {
        self.inner.free_space()
    }

    fn parallel_writes(&self) -> usize {
        self.inner.parallel_writes()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn metadata_cache(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::MemoryBackend;

    #[test]
    fn serves_verified_copies_and_forgets_what_the_repository_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CachedBackend::new(Box::new(MemoryBackend::new()), dir.path().join("c"));
        super::super::conformance::run(&cache);

        let bytes = b"snapshot bytes".to_vec();
        let name = Id::of_bytes(&bytes).to_hex();
        cache.write(FileKind::Snapshot, &name, &bytes).unwrap();
        let path = cache.path(FileKind::Snapshot, &name);
        assert_eq!(fs::read(&path).unwrap(), bytes, "own writes are cached");
        // A damaged cache copy is not used: the repository's is fetched again.
        fs::write(&path, b"garbage").unwrap();
        assert_eq!(cache.read(FileKind::Snapshot, &name).unwrap(), bytes);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // Deleted behind the cache's back (another host's forget): listing drops it.
        cache.inner.delete(FileKind::Snapshot, &name).unwrap();
        assert!(cache.list(FileKind::Snapshot).unwrap().iter().all(|f| f.name != name));
        assert!(!path.exists());
        // Locks and config are never cached.
        cache.write(FileKind::Lock, "l1", b"x").unwrap();
        assert!(!cache.path(FileKind::Lock, "l1").exists());
    }
}
