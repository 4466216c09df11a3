//! Repository locks.
//!
//! `create`, `restore` and `check` take shared locks; the deleting part of
//! prune takes an exclusive one. Locks are files under `locks/`, so they
//! work on any backend: take = write our file, then list; if a lock we
//! cannot share is there, remove ours and wait. The holder rewrites its
//! file every `REFRESH` so a lock older than `STALE` belongs to a process
//! that is gone; on the same host a dead pid is stale at once.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::backend::{Backend, FileKind};
use super::crypto::MasterKey;
use super::error::{Error, Result};
use super::format::lock::LockInfo;
use super::id::Id;
use super::repository::Repository;
use super::sysinfo;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

pub struct LockGuard {
    backend: Arc<dyn Backend>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
    current: Arc<std::sync::Mutex<String>>,
}

pub fn is_stale(info: &LockInfo) -> bool {
    let age = Utc::now().signed_duration_since(info.time).to_std().unwrap_or_default();
    if age > STALE {
        return true;
    }
    info.host == sysinfo::hostname() && !sysinfo::process_alive(info.pid)
}

/// Every lock file with its contents; unreadable ones are returned as errors
/// so callers can decide (lock acquisition ignores damaged files).
pub fn list_locks(repo: &Repository) -> Result<Vec<(String, std::result::Result<LockInfo, String>)>> {
    let mut out = Vec::new();
    for f in repo.backend().list(FileKind::Lock)? {
        match repo.backend().read(FileKind::Lock, &f.name) {
            Ok(bytes) => out.push((f.name, LockInfo::open(repo.key(), &bytes).map_err(|e| e.to_string()))),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn write_lock(
    backend: &dyn Backend,
    key: &MasterKey,
    kind: LockKind,
    purpose: &str,
    scope: Option<&str>,
) -> Result<String> {
    let info = LockInfo {
        host: sysinfo::hostname(),
        pid: std::process::id(),
        username: sysinfo::username(),
        time: Utc::now(),
        exclusive: kind == LockKind::Exclusive,
        purpose: purpose.to_string(),
        scope: scope.map(String::from),
    };
    let name = Id::random().to_hex();
    backend.write(FileKind::Lock, &name, &info.seal(key))?;
    Ok(name)
}

fn describe(info: &LockInfo) -> String {
    format!(
        "{} lock held by `{}` (pid {} on {}, user {}) since {}",
        if info.exclusive { "an exclusive" } else { "a shared" },
        info.purpose,
        info.pid,
        info.host,
        info.username,
        info.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
    )
}

/// Take a lock, waiting up to `wait` for conflicting holders to finish.
/// `on_wait` is called once with a description when waiting starts.
pub fn acquire(
    repo: &Repository,
    kind: LockKind,
    purpose: &str,
    wait: Duration,
    on_wait: &mut dyn FnMut(&str),
) -> Result<LockGuard> {
    acquire_scoped(repo, kind, purpose, None, wait, on_wait)
}

/// As [`acquire`], and also excluding any other lock of the same `scope`.
pub fn acquire_scoped(
    repo: &Repository,
    kind: LockKind,
    purpose: &str,
    scope: Option<&str>,
    wait: Duration,
    on_wait: &mut dyn FnMut(&str),
) -> Result<LockGuard> {
    acquire_inner(repo, kind, purpose, scope, wait, on_wait, &|_| false)
}

/// `ours` names locks this process already holds, which never conflict.
fn acquire_inner(
    repo: &Repository,
    kind: LockKind,
    purpose: &str,
    scope: Option<&str>,
    wait: Duration,
    on_wait: &mut dyn FnMut(&str),
    ours_already: &dyn Fn(&str) -> bool,
) -> Result<LockGuard> {
    let start = Instant::now();
    let mut told = false;
    let mut delay = Duration::from_millis(200);
    loop {
        let ours = write_lock(&**repo.backend(), repo.key(), kind, purpose, scope)?;
        let mut conflict = None;
        for (name, info) in list_locks(repo)? {
            if name == ours || ours_already(&name) {
                continue;
            }
            let Ok(info) = info else { continue };
            let same_scope = scope.is_some() && info.scope.as_deref() == scope;
            if (kind == LockKind::Exclusive || info.exclusive || same_scope) && !is_stale(&info) {
                conflict = Some(info);
                break;
            }
        }
        let Some(info) = conflict else {
            return Ok(LockGuard::start(repo, ours, kind, purpose, scope));
        };
        let _ = repo.backend().delete(FileKind::Lock, &ours);
        if start.elapsed() >= wait {
            return Err(Error::Locked(format!(
                "repository is locked: {}; gave up after {}s (if that process is gone, run `snap unlock`)",
                describe(&info),
                wait.as_secs()
            )));
        }
        if !told {
            on_wait(&format!("waiting for {}", describe(&info)));
            told = true;
        }
        // Jitter breaks the tie when two exclusive lockers back off together.
        let jitter = Duration::from_millis(u64::from(Id::random().0[0]) * 4);
        std::thread::sleep((delay + jitter).min(wait.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

impl LockGuard {
    /// Take an exclusive lock while holding this one (which it does not
    /// conflict with). The caller drops this guard once it has the new one.
    pub fn upgrade(
        &self,
        repo: &Repository,
        purpose: &str,
        wait: Duration,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<LockGuard> {
        let current = self.current.clone();
        let ours = move |name: &str| *current.lock().unwrap_or_else(|p| p.into_inner()) == name;
        acquire_inner(repo, LockKind::Exclusive, purpose, None, wait, on_wait, &ours)
    }

    fn start(repo: &Repository, name: String, kind: LockKind, purpose: &str, scope: Option<&str>) -> LockGuard {
        let backend = repo.backend().clone();
        let key = repo.key().clone();
        let current = Arc::new(std::sync::Mutex::new(name));
        let (stop, stopped) = mpsc::channel::<()>();
        let purpose = purpose.to_string();
        let scope = scope.map(String::from);
        let refresher = {
            let backend = backend.clone();
            let current = current.clone();
            std::thread::spawn(move || loop {
                match stopped.recv_timeout(REFRESH) {
                    Err(RecvTimeoutError::Timeout) => {
                        // Write the fresh lock before removing the old one, so
                        // the repository is never seen unlocked meanwhile.
                        if let Ok(new) = write_lock(&*backend, &key, kind, &purpose, scope.as_deref()) {
                            let mut cur = current.lock().unwrap_or_else(|p| p.into_inner());
                            let old = std::mem::replace(&mut *cur, new);
                            let _ = backend.delete(FileKind::Lock, &old);
                        }
                    }
                    _ => return,
                }
            })
        };
        LockGuard { backend, stop: Some(stop), refresher: Some(refresher), current }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let name = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = self.backend.delete(FileKind::Lock, &name);
    }
}

/// Remove stale locks (or all with `all`); returns the names removed.
pub fn unlock(repo: &Repository, all: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, info) in list_locks(repo)? {
        let remove = all || matches!(&info, Ok(i) if is_stale(i));
        if remove {
            repo.backend().delete(FileKind::Lock, &name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}
