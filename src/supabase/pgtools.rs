//! Finding PostgreSQL client programs new enough for the server, and
//! running them with the connection in the environment.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::error::{SupabaseError, SupabaseResult};
use super::pgconn::{DbTarget, LIBPQ_VARS_TO_CLEAR};

#[derive(Debug, Clone)]
pub struct PgTool {
    pub path: PathBuf,
    /// Major version (e.g. 15, 17).
    pub major: u32,
    /// Full version as printed, e.g. "15.19".
    pub version: String,
}

/// Directories searched: only `SNAP_PG_BIN` when it is set (the user chose
/// those tools, and a silent fallback would hide a wrong choice), else
/// `PATH`, then Debian's per-version directories newest first.
fn candidate_dirs() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("SNAP_PG_BIN").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let mut dirs = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versioned.into_iter().map(|(_, p)| p));
    dirs
}

/// Parse "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)".
fn parse_version(out: &str) -> Option<(u32, String)> {
    let v = out.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = v.split(['.', 'b', 'r', 'd']).next()?.parse().ok()?;
    Some((major, v.to_string()))
}

pub fn tool_version(path: &Path) -> Option<(u32, String)> {
    let out = Command::new(path).arg("--version").stdin(Stdio::null()).output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// Find `name` whose major version is at least `server_major`. The same
/// major as the server is preferred (its SQL is what that server speaks),
/// then the oldest newer one.
pub fn find_tool(name: &str, server_major: u32) -> SupabaseResult<PgTool> {
    let mut seen: Vec<PgTool> = Vec::new();
    for dir in candidate_dirs() {
        let path = dir.join(name);
        if !path.is_file() || seen.iter().any(|t| t.path == path) {
            continue;
        }
        if let Some((major, version)) = tool_version(&path) {
            seen.push(PgTool { path, major, version });
        }
    }
    choose(name, &seen, server_major)
}

/// The same major as the server if present, else the oldest newer one;
/// otherwise an error that says what to install.
fn choose(name: &str, seen: &[PgTool], server_major: u32) -> SupabaseResult<PgTool> {
    if let Some(t) = seen.iter().filter(|t| t.major >= server_major).min_by_key(|t| t.major) {
        return Ok(t.clone());
    }
    let found = if seen.is_empty() {
        "none was found".to_string()
    } else {
        format!(
            "found only {}",
            seen.iter().map(|t| format!("{} {}", t.path.display(), t.version)).collect::<Vec<_>>().join(", ")
        )
    };
    Err(SupabaseError::Tool(format!(
        "{name} {server_major} or newer is needed for this server ({found}); install postgresql-client-{server_major} \
         or set SNAP_PG_BIN to its bin directory"
    )))
}

/// A command for `tool` with the target's connection in its environment
/// and nothing else of libpq's inherited.
pub fn command(tool: &PgTool, target: &DbTarget) -> Command {
    let mut cmd = Command::new(&tool.path);
    for v in LIBPQ_VARS_TO_CLEAR {
        cmd.env_remove(v);
    }
    cmd.envs(target.child_env());
    cmd.stdin(Stdio::null());
    cmd
}

/// A running child whose standard output is being read, with its
/// standard error collected for the error message.
pub struct ChildStream {
    child: Child,
    label: String,
    stderr: std::thread::JoinHandle<String>,
}

impl ChildStream {
    pub fn spawn(mut cmd: Command, label: &str) -> SupabaseResult<(ChildStream, std::process::ChildStdout)> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| SupabaseError::Tool(format!("cannot start {label}: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        crate::repo::sysinfo::enlarge_pipe(&stdout);
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok((ChildStream { child, label: label.to_string(), stderr }, stdout))
    }

    /// Wait for the child; an error carries the last lines it printed.
    pub fn finish(mut self) -> SupabaseResult<()> {
        let status = self.child.wait().map_err(|e| SupabaseError::Tool(format!("{}: {e}", self.label)))?;
        let stderr = self.stderr.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        Err(SupabaseError::Tool(format!("{} failed ({status}): {}", self.label, super::error::one_line(&tail))))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }
}

/// Removes the `\restrict KEY` / `\unrestrict KEY` psql meta-commands that
/// pg_dump 15.14+/16.10+/17.6+ print. The key is random per run, so keeping
/// them would also make every day's schema dump differ; restore runs the SQL
/// itself and adds its own protection. Lines inside COPY data are never
/// touched (there `\r` is an escaped carriage return).
pub struct RestrictFilter<R: Read> {
    inner: BufReader<R>,
    line: Vec<u8>,
    pos: usize,
    in_copy: bool,
}

impl<R: Read> RestrictFilter<R> {
    pub fn new(inner: R) -> Self {
        RestrictFilter { inner: BufReader::with_capacity(256 * 1024, inner), line: Vec::new(), pos: 0, in_copy: false }
    }

    fn next_line(&mut self) -> std::io::Result<bool> {
        loop {
            self.line.clear();
            self.pos = 0;
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(false);
            }
            if self.in_copy {
                if self.line == b"\\.\n" || self.line == b"\\." {
                    self.in_copy = false;
                }
                return Ok(true);
            }
            if self.line.starts_with(b"COPY ") && self.line.ends_with(b"FROM stdin;\n") {
                self.in_copy = true;
                return Ok(true);
            }
            if self.line.starts_with(b"\\restrict ") || self.line.starts_with(b"\\unrestrict ") {
                continue;
            }
            return Ok(true);
        }
    }
}

impl<R: Read> Read for RestrictFilter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.line.len() && !self.next_line()? {
            return Ok(0);
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)\n").unwrap().0, 15);
        assert_eq!(parse_version("pg_dump (PostgreSQL) 17.6\n").unwrap(), (17, "17.6".to_string()));
        assert_eq!(parse_version("psql (PostgreSQL) 18beta1").unwrap().0, 18);
    }

    #[test]
    fn tool_choice_prefers_the_servers_major_and_refuses_older() {
        let t = |major: u32| PgTool {
            path: PathBuf::from(format!("/pg{major}/pg_dump")),
            major,
            version: format!("{major}.1"),
        };
        assert_eq!(choose("pg_dump", &[t(17), t(15), t(16)], 15).unwrap().major, 15);
        assert_eq!(choose("pg_dump", &[t(17), t(16)], 15).unwrap().major, 16);
        let e = choose("pg_dump", &[t(14)], 15).unwrap_err().to_string();
        assert!(e.contains("pg_dump 15 or newer") && e.contains("14.1") && e.contains("SNAP_PG_BIN"), "{e}");
        assert!(choose("pg_dump", &[], 17).unwrap_err().to_string().contains("none was found"));
    }

    #[test]
    fn restrict_lines_are_removed_outside_copy_only() {
        let input = b"--\n\\restrict abc\nSET x = 1;\nCOPY t (a) FROM stdin;\n\\restrict not-a-command\n\\.\n\\unrestrict abc\n";
        let mut out = String::new();
        RestrictFilter::new(&input[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "--\nSET x = 1;\nCOPY t (a) FROM stdin;\n\\restrict not-a-command\n\\.\n");
    }
}
