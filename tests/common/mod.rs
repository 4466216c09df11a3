//! Helpers for tests that drive the `snap` binary.
#![allow(dead_code)]

pub mod pg;
pub mod storage;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Env {
    pub dir: tempfile::TempDir,
    /// A directory, or an `s3:` location.
    pub repo: PathBuf,
    /// Extra environment for every command (S3 credentials, cache folder).
    pub vars: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("bad json ({e}): {}", self.stdout))
    }
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    /// Failures must be one clear line and never a panic.
    pub fn fails_with(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, code, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert!(self.stderr.contains(needle), "expected {needle:?} in: {}", self.stderr);
        self
    }
}

/// A finished command's output as a `Run`.
pub fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

impl Env {
    /// A fresh directory with an initialised repository (cheap KDF settings
    /// so tests stay fast; the default tuning is covered separately).
    pub fn new() -> Env {
        let env = Env::empty();
        env.init();
        env
    }

    pub fn empty() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        Env { dir, repo, vars: Vec::new() }
    }

    /// A fresh directory whose repository lives at `prefix` of `bucket` on
    /// an S3 server (created uninitialised; call `init` yourself).
    pub fn on_s3(endpoint: &str, bucket: &str, prefix: &str) -> Env {
        let mut env = Env::empty();
        env.repo = PathBuf::from(format!("s3:{endpoint}/{bucket}/{prefix}"));
        let cache = env.path("cache").display().to_string();
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "snap-test-key"),
            ("AWS_SECRET_ACCESS_KEY", "snap-test-secret"),
            ("AWS_REGION", "us-east-1"),
            ("SNAP_CACHE_DIR", cache.as_str()),
        ] {
            env.vars.push((k.to_string(), v.to_string()));
        }
        env
    }

    pub fn init(&self) {
        self.snap(&["init", "--kdf-memory", "256", "--kdf-iterations", "1"]).ok();
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A directory `name` in the test's folder holding `files`.
    pub fn tree<D: AsRef<[u8]>>(&self, name: &str, files: &[(&str, D)]) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, data) in files {
            std::fs::write(dir.join(file), data).unwrap();
        }
        dir
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_snap"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("SNAP_REPOSITORY", &self.repo)
            .env("SNAP_PASSWORD", "correct horse")
            .env_remove("SNAP_PASSWORD_FILE")
            .env_remove("SNAP_PASSWORD_COMMAND")
            .env_remove("SNAP_MASTER_KEY_FILE")
            .stdin(Stdio::null());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    pub fn snap(&self, args: &[&str]) -> Run {
        finish(self.command(args).output().unwrap())
    }

    pub fn snap_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        finish(out)
    }

    pub fn create(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["create", "--json"];
        a.extend_from_slice(args);
        self.snap(&a).ok().json()
    }

    /// Start snap in the background with its output discarded.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    /// Wait (up to a minute) until the repository has a file of `kind`.
    pub fn wait_for_file(&self, kind: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.files_of(kind).is_empty() {
            assert!(std::time::Instant::now() < deadline, "no {kind} file appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn files_of(&self, kind: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(self.repo.join(kind))
            .into_iter()
            .filter_map(|e| e.ok())
            // Backend temp files (`.tmp-…`) are not repository files yet.
            .filter(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.into_path())
            .collect();
        out.sort();
        out
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn flip_byte(path: &Path, offset_from_start: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = offset_from_start.min(b.len() - 1);
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Compare two trees: names, kinds, contents, modes, mtimes, link targets.
pub fn assert_same_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let list = |root: &Path| -> Vec<(PathBuf, std::fs::Metadata)> {
        walkdir::WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .map(|e| (e.path().strip_prefix(root).unwrap().to_path_buf(), e.path().symlink_metadata().unwrap()))
            .collect()
    };
    let la = list(a);
    let lb = list(b);
    assert_eq!(la.iter().map(|x| &x.0).collect::<Vec<_>>(), lb.iter().map(|x| &x.0).collect::<Vec<_>>());
    for ((p, ma), (_, mb)) in la.iter().zip(&lb) {
        assert_eq!(ma.file_type(), mb.file_type(), "{}", p.display());
        assert_eq!(ma.mode(), mb.mode(), "mode of {}", p.display());
        if p.as_os_str().is_empty() {
            continue;
        }
        if ma.file_type().is_symlink() {
            assert_eq!(std::fs::read_link(a.join(p)).unwrap(), std::fs::read_link(b.join(p)).unwrap());
        } else {
            assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "mtime of {}", p.display());
        }
        if ma.is_file() {
            assert!(
                std::fs::read(a.join(p)).unwrap() == std::fs::read(b.join(p)).unwrap(),
                "content of {}",
                p.display()
            );
        }
    }
}
