//! The command line: parse, turn arguments into engine calls, render.
//! Knows nothing of the repository format.

pub mod args;
mod copy;
mod doctor;
mod files;
pub mod log;
pub mod output;
pub mod password;
mod project;
mod retention;
mod schedule;
mod unattended;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use crate::repo::archiver::SnapshotMeta;
use crate::repo::backend::{open_location, Backend};
use crate::repo::crypto::{KdfParams, MasterKey};
use crate::repo::format::snapshot::Source;
use crate::repo::lock::{self, LockGuard, LockKind};
use crate::repo::ops::{check, create, diff, repair, restore, stats, walk};
use crate::repo::repository::{InitOptions, Repository};
use crate::repo::saver::{Progress, WorkProgress};
use crate::repo::Error;
use args::{Cli, Command, KeyCommand, RepairCommand};
use output::{bytes, exit, local_time, Output, ProgressDisplay};

#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
    /// The command already printed its JSON result; print no error object.
    pub json_done: bool,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError { code: exit::USAGE, message: message.into(), json_done: false }
    }
    pub(crate) fn new(code: i32, message: impl Into<String>) -> CliError {
        CliError { code, message: message.into(), json_done: false }
    }
    pub(crate) fn after_json(mut self) -> CliError {
        self.json_done = true;
        self
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> CliError {
        let code = match &e {
            Error::NoRepository(_) => exit::NO_REPOSITORY,
            Error::WrongPassword | Error::WrongMasterKey => exit::WRONG_PASSWORD,
            Error::Locked(_) => exit::LOCKED,
            Error::AppendOnly(_) => exit::USAGE,
            Error::SnapshotNotFound(_) | Error::AmbiguousSnapshot(_) | Error::PathNotFound(_) => exit::NOT_FOUND,
            Error::Invalid(_) => exit::USAGE,
            e if e.is_integrity() => exit::INTEGRITY,
            _ => exit::ERROR,
        };
        CliError { code, message: e.to_string(), json_done: false }
    }
}

pub(crate) type CliResult = Result<i32, CliError>;

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let msg = crate::supabase::settings::redact(&info.to_string());
        eprintln!("snap: internal error (please report): {msg}");
    }));
    // Storage credentials are never echoed, whichever library's message
    // might carry them. (Long random strings: hiding them costs nothing,
    // unlike a password that may be an everyday word.)
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(v) = std::env::var(var) {
            crate::supabase::settings::register_secret(&v);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return code;
        }
    };
    let out = Output { json: cli.json, quiet: cli.quiet };
    if let Err(e) = log::init(cli.command.name(), cli.log_format, cli.quiet, cli.log_file.as_deref()) {
        eprintln!("snap: error: {e}");
        return exit::USAGE;
    }
    let notifier = unattended::Notifier::new(cli.notify_url.clone(), cli.notify_webhook.clone());
    let command = cli.command.name();
    notifier.start(command);
    log::record(log::Level::Info, &format!("snap {} {command} started", env!("CARGO_PKG_VERSION")), None);
    let started = std::time::Instant::now();
    let ctx = Context { cli: &cli, out, facts: Default::default() };
    let (code, message) = match run(&ctx) {
        Ok(code) => (code, String::new()),
        Err(e) => {
            // Secrets registered while loading settings never reach output.
            let message = crate::supabase::settings::redact(&e.message);
            if out.json && !e.json_done {
                out.json(&json!({"error": message, "exit_code": e.code}));
            }
            log::error(&message);
            (e.code, message)
        }
    };
    let facts = ctx.facts.into_inner();
    let (level, outcome) = if code == 0 {
        (log::Level::Info, "succeeded".to_string())
    } else {
        (log::Level::Error, format!("failed with exit code {code}"))
    };
    log::record(level, &format!("{command} {outcome} in {:.2}s", started.elapsed().as_secs_f64()), Some(&facts));
    notifier.finish(command, code, &message, started.elapsed(), &facts);
    if let Some(path) = &cli.metrics_file {
        let backend = cli.repo.as_deref().and_then(|r| open_location(r, None).ok());
        if let Err(e) = unattended::write_metrics(path, command, code, started.elapsed(), &facts, backend.as_deref()) {
            log::warn(&format!("cannot write metrics to {}: {e}", path.display()));
        }
    }
    code
}

pub(crate) struct Context<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) out: Output,
    /// Numbers the command reports for notifications and metrics.
    pub(crate) facts: std::cell::RefCell<unattended::Facts>,
}

impl Context<'_> {
    /// Record numbers about this run (for --notify-webhook, --metrics-file).
    pub(crate) fn record(&self, v: serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            self.facts.borrow_mut().extend(m);
        }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, CliError> {
        let loc = self
            .cli
            .repo
            .as_deref()
            .ok_or_else(|| CliError::usage("no repository given: use --repo or set SNAP_REPOSITORY"))?;
        self.backend_at(loc)
    }

    fn backend_at(&self, location: &str) -> Result<Arc<dyn Backend>, CliError> {
        Ok(Arc::from(open_location(location, self.cache_dir(location)).map_err(Error::from)?))
    }

    fn cache_dir(&self, location: &str) -> Option<std::path::PathBuf> {
        (!self.cli.no_cache).then(|| crate::repo::backend::default_cache_dir(location)).flatten()
    }

    pub(crate) fn open(&self) -> Result<Arc<Repository>, CliError> {
        Ok(self.open_keeping_password()?.0)
    }

    /// Open the repository; also return the password it was opened with
    /// (none with `--master-key-file`), for a caller that must store it.
    pub(crate) fn open_keeping_password(&self) -> Result<(Arc<Repository>, Option<password::Secret>), CliError> {
        self.open_backend(self.backend()?)
    }

    /// Open the repository at `location` as `--repo` would be opened.
    pub(crate) fn open_at(&self, location: &str) -> Result<Arc<Repository>, CliError> {
        Ok(self.open_backend(self.backend_at(location)?)?.0)
    }

    fn open_backend(&self, backend: Arc<dyn Backend>) -> Result<(Arc<Repository>, Option<password::Secret>), CliError> {
        match &self.cli.master_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
                let key = MasterKey::import_text(&text).map_err(CliError::usage)?;
                Ok((Arc::new(Repository::open_with_master_key(backend, key)?), None))
            }
            None => {
                let (repo, pw) = open_with_password(backend, password::repository_password)?;
                Ok((repo, Some(pw)))
            }
        }
    }

    /// Open a second repository (e.g. the destination of `copy`), with the
    /// password `ask` finds.
    pub(crate) fn open_other(
        &self,
        location: &str,
        ask: fn() -> Result<password::Secret, CliError>,
    ) -> Result<Arc<Repository>, CliError> {
        Ok(open_with_password(self.backend_at(location)?, ask)?.0)
    }

    pub(crate) fn lock(&self, repo: &Repository, kind: LockKind, purpose: &str) -> Result<LockGuard, CliError> {
        self.lock_scoped(repo, kind, purpose, None)
    }

    /// A lock that also excludes every other lock of `scope`.
    pub(crate) fn lock_scoped(
        &self,
        repo: &Repository,
        kind: LockKind,
        purpose: &str,
        scope: Option<&str>,
    ) -> Result<LockGuard, CliError> {
        let out = self.out;
        Ok(lock::acquire_scoped(repo, kind, purpose, scope, Duration::from_secs(self.cli.lock_wait), &mut |msg| {
            out.note(&format!("snap: {msg}"))
        })?)
    }
}

fn open_with_password(
    backend: Arc<dyn Backend>,
    ask: fn() -> Result<password::Secret, CliError>,
) -> Result<(Arc<Repository>, password::Secret), CliError> {
    // Fail on a missing or unreachable repository before asking for a password.
    match backend.size(crate::repo::backend::FileKind::Config, "config") {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Err(Error::NoRepository(backend.location()).into()),
        Err(e) => return Err(Error::from(e).into()),
    }
    let pw = ask()?;
    Ok((Arc::new(Repository::open(backend, &pw)?), pw))
}

fn kdf(memory: u32, iterations: Option<u32>) -> Result<KdfParams, CliError> {
    let p = match iterations {
        Some(i) => KdfParams { memory_kib: memory, iterations: i, parallelism: KdfParams::default_lanes(memory) },
        None => KdfParams::tune(memory, KdfParams::DEFAULT_WORK),
    };
    p.validate().map_err(CliError::usage)?;
    Ok(p)
}

fn run(ctx: &Context) -> CliResult {
    let (cli, out) = (ctx.cli, ctx.out);
    match &cli.command {
        Command::Init(a) => cmd_init(ctx, a),
        Command::Create(a) => cmd_create(ctx, a),
        Command::Snapshots => cmd_snapshots(ctx),
        Command::Show { snapshot } => cmd_show(ctx, snapshot),
        Command::Ls { snapshot, path } => cmd_ls(ctx, snapshot, path.as_deref()),
        Command::Diff { first, second } => cmd_diff(ctx, first, second),
        Command::Stats => cmd_stats(ctx),
        Command::Restore(a) => cmd_restore(ctx, a),
        Command::Dump { snapshot, path, table, format } => match (path, table) {
            (Some(p), None) => cmd_dump(ctx, snapshot, p),
            (None, Some(t)) => project::cmd_dump_table(ctx, snapshot, t, format),
            _ => Err(CliError::usage("give a PATH or --table SCHEMA.TABLE")),
        },
        Command::Verify(a) => project::cmd_verify(ctx, a),
        Command::Forget(a) => retention::cmd_forget(ctx, a),
        Command::Prune(a) => retention::cmd_prune(ctx, a),
        Command::Policy(c) => retention::cmd_policy(ctx, c),
        Command::Check(a) => cmd_check(ctx, a),
        Command::Repair(RepairCommand::Index) => cmd_repair_index(ctx),
        Command::Repair(RepairCommand::Snapshots { read_data, rewrite }) => {
            cmd_repair_snapshots(ctx, *read_data, *rewrite)
        }
        Command::Key(k) => cmd_key(ctx, k),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "snap", &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|e| CliError::usage(format!("cannot render the manual page: {e}")))?;
            write_stdout(&page)
        }
        Command::Doctor(a) => doctor::cmd_doctor(ctx, a),
        Command::Copy(a) => copy::cmd_copy(ctx, a),
        Command::Schedule(c) => schedule::cmd_schedule(ctx, c),
        Command::Unlock { remove_all } => {
            let repo = ctx.open()?;
            let removed = lock::unlock(&repo, *remove_all)?;
            if out.json {
                out.json(&json!({"removed": removed}));
            } else {
                println!("removed {} lock(s)", removed.len());
            }
            Ok(exit::OK)
        }
    }
}

/// Write generated text; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> CliResult {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::usage(format!("cannot write: {e}"))),
        _ => Ok(exit::OK),
    }
}

fn cmd_init(ctx: &Context, a: &args::InitArgs) -> CliResult {
    let backend = ctx.backend()?;
    let kdf = kdf(a.kdf_memory, a.kdf_iterations)?;
    if !(1..=1024).contains(&a.pack_size) {
        return Err(CliError::usage("--pack-size must be between 1 and 1024 MiB"));
    }
    let pw = password::new_password(true)?;
    let repo = Repository::init(
        backend,
        &pw,
        &InitOptions { kdf, pack_size: a.pack_size * 1024 * 1024, compression_level: a.compression },
    )?;
    if ctx.out.json {
        ctx.out.json(&json!({"id": repo.config().id, "location": repo.backend().location()}));
    } else if !ctx.out.quiet {
        println!("created repository {} at {}", repo.config().id.short(), repo.backend().location());
        println!("Keep the password safe: without it (or `snap key export`) the data cannot be read.");
    }
    Ok(exit::OK)
}

pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            if let Some(t) = naive.and_local_timezone(chrono::Local).earliest() {
                return Ok(t.with_timezone(&chrono::Utc));
            }
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0).and_then(|n| n.and_local_timezone(chrono::Local).earliest()) {
            return Ok(t.with_timezone(&chrono::Utc));
        }
    }
    Err(CliError::usage(format!("cannot parse time {s:?}: use RFC 3339 or \"YYYY-MM-DD HH:MM:SS\"")))
}

fn cmd_create(ctx: &Context, a: &args::CreateArgs) -> CliResult {
    let modes = [!a.paths.is_empty(), a.stdin.is_some(), a.stdin_from_command.is_some()].iter().filter(|x| **x).count();
    if modes == 0 {
        return project::cmd_create_project(ctx, a);
    }
    if modes != 1 {
        return Err(CliError::usage("give PATHs, or --stdin NAME, or --stdin-from-command NAME -- COMMAND"));
    }
    if a.stdin_from_command.is_some() == a.command.is_empty() {
        return Err(CliError::usage(
            "--stdin-from-command NAME needs a command after --, and a command needs --stdin-from-command",
        ));
    }
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let repo = ctx.open()?;
    let _lock = ctx.lock(&repo, LockKind::Shared, "create")?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::create(ctx.out, progress.clone());
    let mut meta = SnapshotMeta {
        time,
        host: a.host.clone(),
        tags: a.tags.clone(),
        source: Source::Stdin { name: String::new() },
        extra: serde_json::Value::Null,
    };
    let report = if let Some(name) = &a.stdin {
        meta.source = Source::Stdin { name: name.clone() };
        crate::repo::sysinfo::enlarge_pipe(&std::io::stdin());
        create::create_from_reader(repo.clone(), progress, name, std::io::stdin().lock(), meta)?
    } else if let Some(name) = &a.stdin_from_command {
        meta.source = Source::Command { name: name.clone(), command: a.command.clone() };
        create::create_from_command(repo.clone(), progress, name, &a.command, meta)?
    } else {
        let abs: Vec<String> = a
            .paths
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string())
            .collect();
        let excludes = create::Excludes::new(&a.excludes)?;
        let parent = if a.force {
            None
        } else if let Some(spec) = &a.parent {
            Some(repo.find_snapshot(spec)?)
        } else {
            let host = a.host.clone().unwrap_or_else(crate::repo::sysinfo::hostname);
            create::find_parent(&repo, &host, &abs)?
        };
        if let Some((id, _)) = &parent {
            log::info(&format!("files unchanged since snapshot {} are taken from it unread", id.short()));
        }
        meta.source = Source::Paths { paths: abs };
        create::create_from_paths(repo.clone(), progress, &a.paths, &excludes, parent.as_ref().map(|p| &p.1), meta)?
    };
    drop(display);
    let s = &report.snapshot.summary;
    ctx.record(json!({"snapshot_id": report.id, "bytes_read": s.bytes_read, "bytes_added": s.bytes_added,
        "files": s.files}));
    for w in &report.warnings {
        log::warn(&w.to_string());
    }
    if ctx.out.json {
        let mut v = output::summary_json(s);
        v.insert("snapshot_id".into(), json!(report.id));
        v.insert("time".into(), json!(report.snapshot.time));
        v.insert("warnings".into(), json!(report.warnings));
        v.insert("files_unchanged".into(), json!(report.unchanged_files));
        ctx.out.json(&serde_json::Value::Object(v));
    } else if !ctx.out.quiet {
        let unchanged = match report.unchanged_files {
            0 => String::new(),
            n => format!(" ({n} unchanged)"),
        };
        println!(
            "snapshot {} saved: {} files{unchanged}, {} dirs, {} read, {} added ({} of {} chunks new) in {:.2}s",
            report.id.short(),
            s.files,
            s.dirs,
            bytes(s.bytes_read),
            bytes(s.bytes_added),
            s.chunks_new,
            s.chunks_total,
            s.duration_s
        );
    }
    if report.warnings.is_empty() {
        Ok(exit::OK)
    } else {
        log::warn(&format!("{} entries could not be read; the snapshot lacks them", report.warnings.len()));
        Ok(exit::PARTIAL)
    }
}

fn cmd_snapshots(ctx: &Context) -> CliResult {
    let repo = ctx.open()?;
    let (snaps, bad) = repo.list_snapshots()?;
    for (name, e) in &bad {
        log::warn(&format!("snapshot {name} cannot be read: {e}"));
    }
    if ctx.out.json {
        let arr: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                json!({"id": id, "short_id": id.short(), "time": s.time, "host": s.host, "username": s.username,
                       "tags": s.tags, "source": s.source, "tree": s.tree, "summary": s.summary})
            })
            .collect();
        ctx.out.json(&serde_json::Value::Array(arr));
    } else {
        println!("{:<10} {:<19} {:<16} {:>10}  {:<12} source", "id", "time", "host", "size", "tags");
        for (id, s) in &snaps {
            println!(
                "{:<10} {:<19} {:<16} {:>10}  {:<12} {}",
                id.short(),
                local_time(&s.time),
                s.host,
                bytes(s.summary.bytes_read),
                s.tags.join(","),
                s.source.describe()
            );
        }
        println!("{} snapshot(s)", snaps.len());
    }
    Ok(if bad.is_empty() { exit::OK } else { exit::INTEGRITY })
}

fn cmd_show(ctx: &Context, spec: &str) -> CliResult {
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(spec)?;
    let mut v = serde_json::to_value(&snap).expect("snapshot serialises");
    v["id"] = json!(id);
    if ctx.out.json {
        ctx.out.json(&v);
    } else {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    }
    Ok(exit::OK)
}

fn cmd_ls(ctx: &Context, spec: &str, path: Option<&str>) -> CliResult {
    let repo = ctx.open()?;
    repo.load_index()?;
    let (_, snap) = repo.find_snapshot(spec)?;
    let comps = walk::split_path(path.unwrap_or("/"));
    let start = match walk::find_node(&repo, &snap.tree, &comps)? {
        None => snap.tree,
        Some(n) => n.subtree.ok_or_else(|| {
            CliError::new(exit::NOT_FOUND, format!("{} is not a directory", path.unwrap_or_default()))
        })?,
    };
    let mut rows = Vec::new();
    let mut prefix = comps.clone();
    walk::visit(&repo, &start, &mut prefix, &mut |p, n| {
        let path = format!("/{}", crate::repo::archiver::display_path(p));
        if ctx.out.json {
            rows.push(json!({"path": path, "type": n.kind, "size": n.size, "mode": format!("{:o}", n.mode),
                             "mtime_ns": n.mtime_ns, "chunks": n.content.len(), "attrs": n.attrs}));
        } else {
            let kind = match n.kind {
                crate::repo::format::tree::NodeKind::Dir => 'd',
                crate::repo::format::tree::NodeKind::Symlink => 'l',
                crate::repo::format::tree::NodeKind::File => '-',
            };
            let target = n.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
            println!("{kind}{:04o} {:>12} {path}{target}", n.mode, n.size);
        }
        Ok(true)
    })?;
    if ctx.out.json {
        ctx.out.json(&serde_json::Value::Array(rows));
    }
    Ok(exit::OK)
}

fn cmd_diff(ctx: &Context, a: &str, b: &str) -> CliResult {
    let repo = ctx.open()?;
    repo.load_index()?;
    let (_, sa) = repo.find_snapshot(a)?;
    let (_, sb) = repo.find_snapshot(b)?;
    let changes = diff::diff(&repo, &sa.tree, &sb.tree)?;
    if ctx.out.json {
        ctx.out.json(&serde_json::Value::Array(
            changes.iter().map(|(c, p)| json!({"change": c, "path": format!("/{p}")})).collect(),
        ));
    } else {
        for (c, p) in &changes {
            println!("{} /{p}", c.symbol());
        }
        println!("{} change(s)", changes.len());
    }
    Ok(exit::OK)
}

fn cmd_stats(ctx: &Context) -> CliResult {
    let repo = ctx.open()?;
    let s = stats::stats(&repo)?;
    if ctx.out.json {
        ctx.out.json(&serde_json::to_value(&s).expect("stats serialise"));
    } else {
        println!("snapshots:            {}", s.snapshots);
        println!("packs:                {} ({})", s.packs, bytes(s.pack_bytes));
        println!("index files:          {} ({})", s.index_files, bytes(s.index_bytes));
        println!("blobs:                {} data, {} tree", s.data_blobs, s.tree_blobs);
        if s.dictionary_blobs > 0 {
            // Kept by prune for the repository's life (docs/FORMAT.md §8).
            println!("dictionaries:         {} ({})", s.dictionary_blobs, bytes(s.dictionary_bytes));
        }
        println!("unique data:          {} raw, {} stored", bytes(s.unique_raw_bytes), bytes(s.unique_stored_bytes));
        println!("all snapshots read:   {}", bytes(s.snapshots_bytes_read));
        if s.unique_stored_bytes > 0 {
            println!("space saving:         {:.1}x", s.snapshots_bytes_read as f64 / s.pack_bytes.max(1) as f64);
        }
    }
    Ok(exit::OK)
}

fn cmd_restore(ctx: &Context, a: &args::RestoreArgs) -> CliResult {
    let Some(target) = &a.target else { return project::cmd_restore_project(ctx, a) };
    let repo = ctx.open()?;
    let _lock = ctx.lock(&repo, LockKind::Shared, "restore")?;
    repo.load_index()?;
    let spec =
        a.snapshot.as_deref().ok_or_else(|| CliError::usage("give the snapshot to restore (an id or `latest`)"))?;
    let (id, snap) = repo.find_snapshot(spec)?;
    ctx.out.note(&format!("restoring snapshot {} of {} into {}", id.short(), local_time(&snap.time), target.display()));
    let progress = Arc::new(WorkProgress::default());
    let display = ProgressDisplay::work(ctx.out, "files", progress.clone());
    let report = restore::restore(
        &repo,
        &snap,
        &restore::RestoreOptions { target: target.clone(), include: a.include.clone(), progress },
    )?;
    drop(display);
    for e in &report.errors {
        log::error(&e.to_string());
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"snapshot_id": id, "files": report.files, "dirs": report.dirs, "symlinks": report.symlinks,
                             "bytes": report.bytes, "errors": report.errors}));
    } else if !ctx.out.quiet {
        println!(
            "restored {} files, {} dirs, {} symlinks, {}",
            report.files,
            report.dirs,
            report.symlinks,
            bytes(report.bytes)
        );
    }
    if report.errors.is_empty() {
        Ok(exit::OK)
    } else {
        Err(CliError::new(
            exit::INTEGRITY,
            format!("{} entries could not be restored (see above; run `snap check`)", report.errors.len()),
        )
        .after_json())
    }
}

fn cmd_dump(ctx: &Context, spec: &str, path: &str) -> CliResult {
    let repo = ctx.open()?;
    let (_, snap) = repo.find_snapshot(spec)?;
    let stdout = std::io::stdout();
    crate::repo::sysinfo::enlarge_pipe(&stdout);
    let mut lock = stdout.lock();
    restore::dump(&repo, &snap, path, &mut lock)?;
    Ok(exit::OK)
}

fn cmd_check(ctx: &Context, a: &args::CheckArgs) -> CliResult {
    let read = if a.read_data {
        check::ReadData::All
    } else if let Some(p) = &a.read_data_subset {
        let share = retention::parse_percent("--read-data-subset", p)?;
        if share == 0.0 {
            return Err(CliError::usage("--read-data-subset must be between 0% and 100%"));
        }
        check::ReadData::Subset(share)
    } else {
        check::ReadData::None
    };
    let repo = ctx.open()?;
    let _lock = ctx.lock(&repo, LockKind::Shared, "check")?;
    let progress = Arc::new(WorkProgress::default());
    let display = ProgressDisplay::work(ctx.out, "packs read", progress.clone());
    let report = check::check(&repo, read, &progress)?;
    drop(display);
    if ctx.out.json {
        ctx.out.json(&serde_json::to_value(&report).expect("report serialises"));
    } else {
        for w in &report.warnings {
            log::warn(&format!("{}: {}", w.object, w.message));
        }
        for p in &report.problems {
            println!("error: {}: {}", p.object, p.message);
        }
        println!(
            "checked {} index files, {} packs, {} snapshots, {} trees; read {} packs ({} blobs): {} problem(s)",
            report.index_files,
            report.packs,
            report.snapshots,
            report.trees,
            report.packs_read,
            report.blobs_read,
            report.problems.len()
        );
    }
    if report.problems.is_empty() {
        Ok(exit::OK)
    } else {
        Err(CliError::new(
            exit::INTEGRITY,
            format!(
                "check found {} problem(s) in the repository; to keep everything still intact: `snap repair index`, \
                 then `snap repair snapshots --read-data` (and `--rewrite` to drop what is lost)",
                report.problems.len()
            ),
        )
        .after_json())
    }
}

fn cmd_repair_index(ctx: &Context) -> CliResult {
    let repo = ctx.open()?;
    let _lock = ctx.lock(&repo, LockKind::Exclusive, "repair index")?;
    let r = repair::repair_index(&repo)?;
    if ctx.out.json {
        ctx.out.json(&serde_json::to_value(&r).expect("report serialises"));
    } else {
        for u in &r.unreadable_packs {
            log::warn(&u.to_string());
        }
        println!(
            "indexed {} blobs in {} packs: wrote {} index files, removed {}",
            r.blobs, r.packs, r.index_files_written, r.index_files_removed
        );
    }
    Ok(if r.unreadable_packs.is_empty() { exit::OK } else { exit::PARTIAL })
}

fn cmd_repair_snapshots(ctx: &Context, read_data: bool, rewrite: bool) -> CliResult {
    let repo = ctx.open()?;
    // Exclusive: a prune must not delete the trees this writes meanwhile.
    let _lock = ctx.lock(&repo, if rewrite { LockKind::Exclusive } else { LockKind::Shared }, "repair snapshots")?;
    let progress = Arc::new(WorkProgress::default());
    let display = ProgressDisplay::work(ctx.out, "packs read", progress.clone());
    let r = repair::repair_snapshots(&repo, read_data, rewrite, &progress)?;
    drop(display);
    if ctx.out.json {
        ctx.out.json(&serde_json::to_value(&r).expect("report serialises"));
    } else {
        for d in &r.damaged {
            let fate = match (&d.replaced_by, d.unrecoverable, rewrite) {
                (Some(new), _, _) => format!("replaced by {}", new.short()),
                (None, true, true) => "removed: nothing of it is left".to_string(),
                (None, true, false) => "nothing of it is left".to_string(),
                (None, false, _) => "would be rewritten".to_string(),
            };
            println!("snapshot {} ({}, {}): {fate}", d.id.short(), local_time(&d.time), d.source);
            for p in &d.lost {
                println!("  lost {p}");
            }
        }
        println!(
            "{} snapshot(s), {} damaged; {} blob(s) missing or damaged, {} pack(s) missing{}",
            r.snapshots,
            r.damaged.len(),
            r.bad_blobs,
            r.missing_packs,
            if read_data { format!(", {} pack(s) read", r.packs_read) } else { String::new() }
        );
        if !rewrite && !r.damaged.is_empty() {
            println!("run again with --rewrite to replace them by snapshots without the lost paths");
        }
    }
    Ok(if r.damaged.is_empty() || rewrite { exit::OK } else { exit::INTEGRITY })
}

fn cmd_key(ctx: &Context, k: &KeyCommand) -> CliResult {
    let repo = ctx.open()?;
    match k {
        KeyCommand::Add { kdf_memory, kdf_iterations, append_only } => {
            if !append_only {
                repo.require_full_access("add a full-access key (add one with --append-only)")?;
            }
            let params = kdf(*kdf_memory, *kdf_iterations)?;
            let pw = password::new_password(false)?;
            let name = repo.add_key(&pw, params, *append_only)?;
            if ctx.out.json {
                ctx.out.json(&json!({"added": name, "append_only": append_only}));
            } else if *append_only {
                println!("added append-only key {}: it can back up and restore, never delete", &name[..8]);
            } else {
                println!("added key {}", &name[..8]);
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if ctx.out.json {
                let arr: Vec<_> = keys
                    .iter()
                    .map(|k| json!({"id": k.name, "current": k.current, "created": k.file.created, "host": k.file.host,
                                    "username": k.file.username, "kdf": k.file.kdf, "memory_kib": k.file.params.memory_kib,
                                    "iterations": k.file.params.iterations, "append_only": k.file.append_only}))
                    .collect();
                ctx.out.json(&serde_json::Value::Array(arr));
            } else {
                println!("  {:<10} {:<19} {:<16} {:<12} user", "id", "created", "host", "access");
                for k in &keys {
                    println!(
                        "{} {:<10} {:<19} {:<16} {:<12} {}",
                        if k.current { '*' } else { ' ' },
                        &k.name[..8],
                        local_time(&k.file.created),
                        k.file.host,
                        if k.file.append_only { "append-only" } else { "full" },
                        k.file.username
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let name = repo.remove_key(id)?;
            if ctx.out.json {
                ctx.out.json(&json!({"removed": name}));
            } else {
                println!("removed key {}", &name[..8]);
            }
        }
        KeyCommand::Passwd { kdf_memory, kdf_iterations } => {
            let params = kdf(*kdf_memory, *kdf_iterations)?;
            let Some(old) = repo.current_key_name().map(str::to_string) else {
                return Err(CliError::usage("opened with the master key: use `snap key add` to set a password"));
            };
            repo.require_full_access("replace its own key (ask for a new append-only key instead)")?;
            let pw = password::new_password(false)?;
            let name = repo.add_key(&pw, params, false)?;
            repo.backend().delete(crate::repo::backend::FileKind::Key, &old).map_err(Error::from)?;
            if ctx.out.json {
                ctx.out.json(&json!({"added": name, "removed": old}));
            } else {
                println!("password changed (key {} replaced by {})", &old[..8], &name[..8]);
            }
        }
        KeyCommand::Export => {
            if std::io::stdout().is_terminal() {
                eprintln!("This master key opens the repository without any password. Store it offline.");
            }
            let text = repo.key().export_text();
            if ctx.out.json {
                ctx.out.json(&json!({"master_key": text}));
            } else {
                println!("{text}");
            }
        }
    }
    Ok(exit::OK)
}
