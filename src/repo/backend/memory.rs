//! An in-memory backend for tests and benchmarks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Backend, BackendError, BackendResult, FileInfo, FileKind};

type Files = BTreeMap<(FileKind, String), Vec<u8>>;

#[derive(Default)]
pub struct MemoryBackend {
    /// `None` until `create`, like a location with no repository yet.
    files: Mutex<Option<Files>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Files) -> BackendResult<T>) -> BackendResult<T> {
        let mut guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(files) => f(files),
            None => Err(BackendError::NotFound("memory repository".into())),
        }
    }
}

fn missing(kind: FileKind, name: &str) -> BackendError {
    BackendError::NotFound(format!("{}/{name}", kind.dir()))
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }

    fn create(&self) -> BackendResult<()> {
        let mut guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() {
            return Err(BackendError::Unsupported("memory repository already exists".into()));
        }
        *guard = Some(BTreeMap::new());
        Ok(())
    }

    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
        self.with(|f| {
            Ok(f.iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, n), d)| FileInfo { name: n.clone(), size: d.len() as u64 })
                .collect())
        })
    }

    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
        self.with(|f| f.get(&(kind, name.to_string())).cloned().ok_or_else(|| missing(kind, name)))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
        self.with(|f| {
            let d = f.get(&(kind, name.to_string())).ok_or_else(|| missing(kind, name))?;
            let end = offset.checked_add(length).filter(|e| *e <= d.len() as u64);
            match end {
                Some(end) => Ok(d[offset as usize..end as usize].to_vec()),
                None => Err(BackendError::Unsupported(format!("{name}: range beyond end of file"))),
            }
        })
    }

    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
        self.with(|f| f.get(&(kind, name.to_string())).map(|d| d.len() as u64).ok_or_else(|| missing(kind, name)))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
        self.with(|f| {
            f.insert((kind, name.to_string()), data.to_vec());
            Ok(())
        })
    }

    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
        self.with(|f| f.remove(&(kind, name.to_string())).map(|_| ()).ok_or_else(|| missing(kind, name)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run(&super::MemoryBackend::new());
    }
}
