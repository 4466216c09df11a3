//! `snap restore` into a directory and `snap dump` of one file.
//!
//! Each file is written from its blobs in order, fetched and decrypted in
//! parallel. On a remote repository several files are written at once, so
//! small files do not each wait out their own round trips. A file whose
//! data cannot be read is removed rather than left half-written, reported,
//! and the restore carries on with the rest.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::super::archiver::display_path;
use super::super::error::{Error, Result};
use super::super::format::snapshot::Snapshot;
use super::super::format::tree::{Node, NodeKind};
use super::super::reader::{for_each_blob_ordered, read_threads};
use super::super::repository::Repository;
use super::super::saver::WorkProgress;
use super::super::sysinfo;
use super::file_writer::FileWriter;
use super::walk::{find_node, split_path, visit};

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only entries matching one of these globs (or lying under a
    /// matching directory). Empty: everything.
    pub include: Vec<String>,
    pub progress: Arc<WorkProgress>,
}

#[derive(Default, Debug)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
}

fn include_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches('/');
        b.add(Glob::new(p).map_err(|e| Error::Invalid(format!("bad include pattern {p:?}: {e}")))?);
    }
    Ok(Some(b.build().map_err(|e| Error::Invalid(e.to_string()))?))
}

/// Remove whatever is at `path` if it is a symlink, so that restoring never
/// writes through a link into a place outside the target.
fn clear_symlink(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::remove_file(path),
        _ => Ok(()),
    }
}

fn ensure_dir(path: &Path) -> std::io::Result<()> {
    clear_symlink(path)?;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path)
        }
        Err(_) => fs::create_dir(path),
    }
}

fn set_times(path: &Path, node: &Node) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
}

fn set_owner(path: &Path, node: &Node) {
    if sysinfo::is_root() {
        if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
            // SAFETY: c is a valid NUL-terminated path; lchown does not follow links.
            unsafe { libc::lchown(c.as_ptr(), node.uid, node.gid) };
        }
    }
}

pub fn restore(repo: &Repository, snapshot: &Snapshot, opts: &RestoreOptions) -> Result<RestoreReport> {
    repo.load_index()?;
    let include = include_set(&opts.include)?;
    fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let mut report = RestoreReport::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let progress = &opts.progress;
    if include.is_none() {
        progress.set_total(snapshot.summary.files, snapshot.summary.bytes_read);
    }
    // Local disks: one file at a time, written by the walking thread with
    // every reader on it (measured fastest). Remote: FILES_IN_FLIGHT file
    // workers, the readers shared out.
    let workers = if repo.backend().is_remote() { FILES_IN_FLIGHT } else { 0 };
    let threads = (read_threads(repo) / workers.max(1)).max(2);
    let target = opts.target.clone();
    let done = std::sync::Mutex::new(RestoreReport::default());
    let (file_tx, file_rx) = crossbeam_channel::bounded::<(PathBuf, Node, String)>(workers.max(1));
    let write_file = |dest: &Path, node: &Node, label: &str| {
        let res = restore_file(repo, node, dest, threads, progress);
        let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(n) => {
                progress.item_done();
                done.files += 1;
                done.bytes += n;
            }
            Err(e) => done.errors.push(format!("{label}: {e}")),
        }
    };
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..workers {
            let file_rx = file_rx.clone();
            let write_file = &write_file;
            scope.spawn(move || {
                for (dest, node, label) in file_rx {
                    write_file(&dest, &node, &label);
                }
            });
        }
        drop(file_rx);
        let matches = |path: &[Vec<u8>]| -> bool {
            let Some(set) = &include else { return true };
            (1..=path.len()).any(|n| set.is_match(display_path(&path[..n])))
        };
        // A directory is entered when it or a descendant could match.
        let walked = visit(repo, &snapshot.tree, &mut Vec::new(), &mut |path, node| {
            let dest = path.iter().fold(target.clone(), |p, c| p.join(std::ffi::OsStr::from_bytes(c)));
            let selected = matches(path);
            if node.kind == NodeKind::Dir {
                if selected {
                    if let Err(e) = fs::create_dir_all(dest.parent().unwrap_or(&target)).and_then(|_| ensure_dir(&dest))
                    {
                        report.errors.push(format!("{}: {e}", display_path(path)));
                        return Ok(false);
                    }
                    dirs.push((dest, node.clone()));
                    report.dirs += 1;
                }
                return Ok(true);
            }
            if !selected {
                return Ok(false);
            }
            if let Some(parent) = dest.parent() {
                if let Err(e) = fs::create_dir_all(parent) {
                    report.errors.push(format!("{}: {e}", display_path(path)));
                    return Ok(false);
                }
            }
            match node.kind {
                NodeKind::File if workers > 0 => {
                    if file_tx.send((dest, node.clone(), display_path(path))).is_err() {
                        return Err(Error::Invalid("restore workers stopped".into()));
                    }
                }
                NodeKind::File => write_file(&dest, node, &display_path(path)),
                NodeKind::Symlink => match restore_symlink(node, &dest) {
                    Ok(()) => report.symlinks += 1,
                    Err(e) => report.errors.push(format!("{}: {e}", display_path(path))),
                },
                NodeKind::Dir => unreachable!(),
            }
            Ok(false)
        });
        drop(file_tx);
        walked
    })?;
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    report.files = done.files;
    report.bytes = done.bytes;
    report.errors.extend(done.errors);
    // Directory metadata last (deepest first): writing entries changes mtimes.
    for (path, node) in dirs.iter().rev() {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(node.mode));
        set_owner(path, node);
        let _ = set_times(path, node);
    }
    Ok(report)
}

/// Files written at once when restoring from a remote repository.
const FILES_IN_FLIGHT: usize = 4;

fn restore_file(repo: &Repository, node: &Node, dest: &Path, threads: usize, progress: &WorkProgress) -> Result<u64> {
    clear_symlink(dest).map_err(|e| Error::io(dest.display(), e))?;
    if fs::symlink_metadata(dest).map(|m| m.is_dir()).unwrap_or(false) {
        fs::remove_dir_all(dest).map_err(|e| Error::io(dest.display(), e))?;
    }
    // Restored files are fsynced before restore reports success.
    let mut f = FileWriter::create(dest, node.size).map_err(|e| Error::io(dest.display(), e))?;
    let mut written = 0u64;
    let res = for_each_blob_ordered(repo, &node.content, threads, |data| {
        f.write(&data).map_err(|e| Error::io(dest.display(), e))?;
        written += data.len() as u64;
        progress.add_bytes(data.len() as u64);
        Ok(())
    })
    .and_then(|()| f.finish().map_err(|e| Error::io(dest.display(), e)));
    if let Err(e) = res {
        let _ = fs::remove_file(dest);
        return Err(e);
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(node.mode)).map_err(|e| Error::io(dest.display(), e))?;
    set_owner(dest, node);
    set_times(dest, node).map_err(|e| Error::io(dest.display(), e))?;
    Ok(written)
}

fn restore_symlink(node: &Node, dest: &Path) -> Result<()> {
    let target = node.target_bytes().ok_or_else(|| Error::Invalid("symlink without target".into()))?;
    if fs::symlink_metadata(dest).is_ok() {
        if fs::symlink_metadata(dest).map(|m| m.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(dest)
        } else {
            fs::remove_file(dest)
        }
        .map_err(|e| Error::io(dest.display(), e))?;
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), dest).map_err(|e| Error::io(dest.display(), e))?;
    set_owner(dest, node);
    let _ = set_times(dest, node);
    Ok(())
}

/// Write one file of a snapshot to `out`.
pub fn dump(repo: &Repository, snapshot: &Snapshot, path: &str, out: &mut dyn Write) -> Result<u64> {
    repo.load_index()?;
    let comps = split_path(path);
    let node = find_node(repo, &snapshot.tree, &comps)?
        .ok_or_else(|| Error::PathNotFound("give the path of a file inside the snapshot".into()))?;
    if node.kind != NodeKind::File {
        return Err(Error::PathNotFound(format!("{} is not a file", display_path(&comps))));
    }
    let mut n = 0u64;
    for_each_blob_ordered(repo, &node.content, read_threads(repo), |data| {
        n += data.len() as u64;
        out.write_all(&data).map_err(|e| Error::io("standard output", e))
    })?;
    out.flush().map_err(|e| Error::io("standard output", e))?;
    Ok(n)
}

/// Open a file for the `dump` target, used by tests and the CLI alike.
pub fn open_output(path: &Path) -> Result<File> {
    File::create(path).map_err(|e| Error::io(path.display(), e))
}
