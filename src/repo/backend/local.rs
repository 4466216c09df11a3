//! A repository in a local directory.
//!
//! Writes go to a temporary name in the destination directory, are fsynced,
//! renamed into place, and the directory is fsynced, so a crash leaves either
//! the whole file or none (plus perhaps a `.tmp-` file that listing ignores).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Backend, BackendError, BackendResult, FileInfo, FileKind};

#[derive(Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

const TMP_PREFIX: &str = ".tmp-";

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Config => self.root.join("config"),
            FileKind::Pack => self.root.join("data").join(name.get(..2).unwrap_or("00")).join(name),
            _ => self.root.join(kind.dir()).join(name),
        }
    }

    fn io_err(path: &Path, e: io::Error) -> BackendError {
        if e.kind() == io::ErrorKind::NotFound {
            BackendError::NotFound(path.display().to_string())
        } else {
            BackendError::Io { path: path.display().to_string(), source: e }
        }
    }

    fn list_dir(dir: &Path, out: &mut Vec<FileInfo>) -> BackendResult<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Self::io_err(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Self::io_err(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata().map_err(|e| Self::io_err(&entry.path(), e))?;
            if meta.is_file() {
                out.push(FileInfo { name, size: meta.len() });
            }
        }
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `dest` with `data`, whole or not at all, surviving a crash: a
/// temporary `.tmp-<random>` file in the same directory (created with
/// `mode`, if given), fsynced, renamed over `dest`, the directory fsynced.
pub fn write_durably(dest: &Path, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{TMP_PREFIX}{}", crate::repo::id::Id::random().short()));
    let result = (|| -> io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        rename_durably(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Move a complete, fsynced temporary file to `dest` and make the rename
/// itself durable.
fn rename_durably(tmp: &Path, dest: &Path) -> io::Result<()> {
    fs::rename(tmp, dest)?;
    sync_dir(dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// A file being written under a temporary name in the repository's own
/// directory for its kind (same filesystem, so `commit` is a rename).
struct LocalStaged {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    backend: LocalBackend,
    kind: FileKind,
    committed: bool,
}

/// Appends are gathered into writes of this size: few system calls, and
/// little memory per open pack.
const STAGE_BUFFER: usize = 256 * 1024;

impl super::StagedFile for LocalStaged {
    fn append(&mut self, bytes: &[u8]) -> BackendResult<()> {
        self.file.write_all(bytes).map_err(|e| LocalBackend::io_err(&self.tmp, e))
    }

    fn commit(mut self: Box<Self>, name: &str) -> BackendResult<()> {
        let tmp = self.tmp.clone();
        let err = |e| LocalBackend::io_err(&tmp, e);
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        let dest = self.backend.destination(self.kind, name)?;
        rename_durably(&self.tmp, &dest).map_err(|e| LocalBackend::io_err(&dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl LocalBackend {
    /// The path of a file about to be written, its directory created if
    /// missing (a repository made by an older version, or damaged).
    fn destination(&self, kind: FileKind, name: &str) -> BackendResult<PathBuf> {
        let dest = self.path(kind, name);
        let dir = dest.parent().expect("repository paths have a parent");
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|e| Self::io_err(dir, e))?;
        }
        Ok(dest)
    }

    /// Where files of `kind` are staged before they have a name.
    fn staging_dir(&self, kind: FileKind) -> PathBuf {
        match kind {
            FileKind::Config => self.root.clone(),
            _ => self.root.join(kind.dir()),
        }
    }
}

impl Backend for LocalBackend {
    fn stage(&self, kind: FileKind) -> BackendResult<Option<Box<dyn super::StagedFile>>> {
        let dir = self.staging_dir(kind);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", crate::repo::id::Id::random().short()));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| Self::io_err(&tmp, e))?;
        Ok(Some(Box::new(LocalStaged {
            file: io::BufWriter::with_capacity(STAGE_BUFFER, file),
            tmp,
            backend: self.clone(),
            kind,
            committed: false,
        })))
    }

    fn remove_staged_leftovers(&self) -> BackendResult<u64> {
        // Every directory a temporary can be in but locks/, where another
        // process may be writing its lock right now.
        let mut dirs: Vec<PathBuf> =
            [FileKind::Config, FileKind::Key, FileKind::Pack, FileKind::Index, FileKind::Snapshot]
                .into_iter()
                .map(|kind| self.staging_dir(kind))
                .collect();
        // `write` puts a pack's temporary beside it, in data/xx/.
        if let Ok(subdirs) = fs::read_dir(self.staging_dir(FileKind::Pack)) {
            dirs.extend(subdirs.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        let mut removed = 0;
        for entry in dirs.iter().filter_map(|d| fs::read_dir(d).ok()).flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|e| Self::io_err(&path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn free_space(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        // The repository may not exist yet: ask about the nearest ancestor.
        let dir = self.root.ancestors().find(|p| p.is_dir())?;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a valid C string and `st` is written by statvfs
        // before it is read, only when the call succeeds.
        let st = unsafe {
            if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
                return None;
            }
            st.assume_init()
        };
        // f_bavail: blocks an unprivileged writer may use (root may dip
        // into the reserve, but a backup should not count on it).
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }

    fn create(&self) -> BackendResult<()> {
        if self.root.join("config").exists() {
            return Err(BackendError::Io {
                path: self.root.display().to_string(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "a repository already exists here"),
            });
        }
        if let Ok(mut entries) = fs::read_dir(&self.root) {
            if entries.next().is_some() {
                return Err(BackendError::Io {
                    path: self.root.display().to_string(),
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "directory is not empty"),
                });
            }
        }
        for kind in [FileKind::Key, FileKind::Index, FileKind::Snapshot, FileKind::Lock] {
            let d = self.root.join(kind.dir());
            fs::create_dir_all(&d).map_err(|e| Self::io_err(&d, e))?;
        }
        for i in 0..256 {
            let d = self.root.join("data").join(format!("{i:02x}"));
            fs::create_dir_all(&d).map_err(|e| Self::io_err(&d, e))?;
        }
        for d in [self.root.join("data"), self.root.clone()] {
            sync_dir(&d).map_err(|e| Self::io_err(&d, e))?;
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                if let Ok(m) = fs::metadata(self.root.join("config")) {
                    out.push(FileInfo { name: "config".into(), size: m.len() });
                }
            }
            FileKind::Pack => {
                let data = self.root.join("data");
                let subdirs = match fs::read_dir(&data) {
                    Ok(d) => d,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Self::io_err(&data, e)),
                };
                for sub in subdirs {
                    let sub = sub.map_err(|e| Self::io_err(&data, e))?;
                    if sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        Self::list_dir(&sub.path(), &mut out)?;
                    }
                }
            }
            _ => Self::list_dir(&self.root.join(kind.dir()), &mut out)?,
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
        let p = self.path(kind, name);
        fs::read(&p).map_err(|e| Self::io_err(&p, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
        let p = self.path(kind, name);
        let mut f = File::open(&p).map_err(|e| Self::io_err(&p, e))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| Self::io_err(&p, e))?;
        let mut buf = vec![0u8; length as usize];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackendError::Io {
                    path: p.display().to_string(),
                    source: io::Error::new(e.kind(), "file is shorter than expected (truncated?)"),
                }
            } else {
                Self::io_err(&p, e)
            }
        })?;
        Ok(buf)
    }

    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
        let p = self.path(kind, name);
        Ok(fs::metadata(&p).map_err(|e| Self::io_err(&p, e))?.len())
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let dest = self.destination(kind, name)?;
        write_durably(&dest, data, None).map_err(|e| Self::io_err(&dest, e))
    }

    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
        let p = self.path(kind, name);
        fs::remove_file(&p).map_err(|e| Self::io_err(&p, e))?;
        if let Some(dir) = p.parent() {
            sync_dir(dir).map_err(|e| Self::io_err(dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::new(dir.path().join("repo"));
        super::super::conformance::run(&b);
    }

    #[test]
    fn staged_files_appear_whole_at_commit_and_leave_nothing_otherwise() {
        use super::super::{Backend, FileKind};
        let dir = tempfile::tempdir().unwrap();
        let b = super::LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let name = "cd".repeat(32);

        let mut staged = b.stage(FileKind::Pack).unwrap().expect("a local repository stages files");
        staged.append(b"0123").unwrap();
        staged.append(&vec![7u8; 300_000]).unwrap();
        assert!(b.list(FileKind::Pack).unwrap().is_empty(), "nothing is listed before commit");
        staged.commit(&name).unwrap();
        let bytes = b.read(FileKind::Pack, &name).unwrap();
        assert_eq!(bytes.len(), 300_004);
        assert_eq!(&bytes[..4], b"0123");
        assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1);

        let mut abandoned = b.stage(FileKind::Pack).unwrap().unwrap();
        abandoned.append(b"half a pack").unwrap();
        drop(abandoned);
        let mut crashed = b.stage(FileKind::Pack).unwrap().unwrap();
        crashed.append(b"a pack whose writer died").unwrap();
        std::mem::forget(crashed);
        assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1, "temporaries are never listed");
        assert_eq!(b.remove_staged_leftovers().unwrap(), 1, "only the crashed writer's file was left");
        assert_eq!(b.remove_staged_leftovers().unwrap(), 0);
        let leftovers: Vec<_> = walkdir::WalkDir::new(dir.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(super::TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(b.read(FileKind::Pack, &name).unwrap(), bytes);
    }
}
