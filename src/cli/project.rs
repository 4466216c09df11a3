//! The Supabase commands of the CLI: settings in, engine and Supabase
//! calls, a summary out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use std::io::IsTerminal;

use super::output::{bytes, exit, local_time, ProgressDisplay};
use super::{args, parse_time, CliError, CliResult, Context};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::id::Id;
use crate::repo::lock::LockKind;
use crate::repo::repository::Repository;
use crate::repo::saver::Progress;
use crate::supabase::backup::{backup_project, BackupOptions};
use crate::supabase::copytext;
use crate::supabase::dbdump::DbObserver;
use crate::supabase::dbrestore::DbRestoreOptions;
use crate::supabase::project::{load_project, Parts, Project};
use crate::supabase::restore::{self, RestoreOptions};
use crate::supabase::settings::{SettingsSource, UrlFlags};
use crate::supabase::storage_backup::StorageObserver;
use crate::supabase::verify::{verify_project, Difference, VerifyOptions};
use crate::supabase::SupabaseError;

impl From<SupabaseError> for CliError {
    fn from(e: SupabaseError) -> CliError {
        match e {
            SupabaseError::Repo(r) => r.into(),
            SupabaseError::Config(m) => CliError::usage(m),
            SupabaseError::Partial(m) => CliError::new(exit::PARTIAL, m),
            other => CliError::new(exit::ERROR, other.to_string()),
        }
    }
}

pub(super) fn url_flags(p: &args::ProjectArgs) -> UrlFlags {
    UrlFlags { db_url: p.db_url.clone(), supabase_url: p.supabase_url.clone(), storage_url: p.storage_url.clone() }
}

/// Counts for the progress line; warnings go to stderr as they happen.
#[derive(Default)]
struct Counters {
    streams_done: AtomicU64,
    objects_total: AtomicU64,
    objects_done: AtomicU64,
    objects_downloaded: AtomicU64,
}

impl DbObserver for Counters {
    fn stream_done(&self, _name: &str, _bytes: u64) {
        self.streams_done.fetch_add(1, Ordering::Relaxed);
    }
    fn warn(&self, message: &str) {
        super::log::warn(message);
    }
}

impl StorageObserver for Counters {
    fn objects_listed(&self, _bucket: &str, count: usize) {
        self.objects_total.fetch_add(count as u64, Ordering::Relaxed);
    }
    fn object_done(&self, _bytes: u64, downloaded: bool) {
        self.objects_done.fetch_add(1, Ordering::Relaxed);
        if downloaded {
            self.objects_downloaded.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn warn(&self, message: &str) {
        DbObserver::warn(self, message)
    }
}

pub fn cmd_create_project(ctx: &Context, a: &args::CreateArgs) -> CliResult {
    if !a.command.is_empty() {
        return Err(CliError::usage("a command after -- needs --stdin-from-command NAME"));
    }
    let parts = Parts::parse(a.only.as_deref())?;
    let source = SettingsSource::load(a.project.env_file.as_deref())?;
    let project = load_project(&source, &url_flags(&a.project), parts)?;
    for t in &a.exclude_tables {
        if !t.contains('.') {
            return Err(CliError::usage(format!("--exclude-table takes SCHEMA.TABLE, not {t:?}")));
        }
    }
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let repo = ctx.open()?;
    // Two backups of one project never race; backups of others run alongside.
    let identity = project.identity();
    let scope = format!("create {identity}");
    let _lock = ctx.lock_scoped(&repo, LockKind::Shared, &format!("create of {identity}"), Some(&scope))?;
    let progress = Arc::new(Progress::default());
    let observer = Arc::new(Counters::default());
    let display = {
        let (p, c) = (progress.clone(), observer.clone());
        ProgressDisplay::start(ctx.out, move |elapsed| {
            let read = Progress::get(&p.bytes_read);
            let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
            format!(
                "db: {} streams | storage: {}/{} objects ({} downloaded) | {} read ({}/s), {} added",
                c.streams_done.load(Ordering::Relaxed),
                c.objects_done.load(Ordering::Relaxed),
                c.objects_total.load(Ordering::Relaxed),
                c.objects_downloaded.load(Ordering::Relaxed),
                bytes(read),
                bytes(rate as u64),
                bytes(Progress::get(&p.bytes_added)),
            )
        })
    };
    let report = backup_project(
        repo,
        progress,
        &project,
        &BackupOptions {
            parts,
            storage_concurrency: a.storage_concurrency.max(1),
            allow_partial: a.allow_partial,
            repository_location: ctx.cli.repo.clone().unwrap_or_default(),
            jobs: a.jobs.max(1),
            exclude_tables: a.exclude_tables.clone(),
            exclude_buckets: a.exclude_buckets.clone(),
            tags: a.tags.clone(),
            host: a.host.clone(),
            time,
        },
        &*observer,
    );
    drop(display);
    let report = report?;
    let s = &report.snapshot.summary;
    let (tables, rows) = report
        .db
        .as_ref()
        .map(|d| (d.tables.len() as u64, d.tables.iter().map(|t| t.rows).sum::<u64>()))
        .unwrap_or((0, 0));
    let st = report.storage.as_ref();
    let objects = st.map(|m| m.objects_downloaded + m.objects_reused).unwrap_or(0);
    let missing = st.map(|m| m.missing.len()).unwrap_or(0);
    ctx.record(json!({"snapshot_id": report.id, "bytes_read": s.bytes_read, "bytes_added": s.bytes_added,
        "files": s.files, "tables": tables, "rows": rows, "objects": objects, "objects_missing": missing}));
    if ctx.out.json {
        let mut v = super::output::summary_json(s);
        let extra = json!({
            "snapshot_id": report.id,
            "time": report.snapshot.time,
            "source": report.snapshot.source,
            "parts": report.snapshot.extra["parts"],
            "tables": tables,
            "rows": rows,
            "buckets": st.map(|m| m.buckets.len()).unwrap_or(0),
            "objects": objects,
            "objects_downloaded": st.map(|m| m.objects_downloaded).unwrap_or(0),
            "bytes_downloaded": st.map(|m| m.bytes_downloaded).unwrap_or(0),
            "objects_reused": st.map(|m| m.objects_reused).unwrap_or(0),
            "objects_missing": missing,
            "objects_deleted_during_backup": st.map(|m| m.deleted_during_backup.len()).unwrap_or(0),
            "storage_retries": st.map(|m| m.retries).unwrap_or(0),
            "warnings": report.warnings,
        });
        if let serde_json::Value::Object(m) = extra {
            v.extend(m);
        }
        ctx.out.json(&serde_json::Value::Object(v));
    } else if !ctx.out.quiet {
        println!(
            "snapshot {} saved: {} tables, {} rows, {} objects ({} downloaded), {} read, {} added in {:.2}s",
            report.id.short(),
            tables,
            rows,
            objects,
            st.map(|m| m.objects_downloaded).unwrap_or(0),
            bytes(s.bytes_read),
            bytes(s.bytes_added),
            s.duration_s
        );
    }
    if missing > 0 {
        super::log::warn(&format!("{missing} objects could not be read; the snapshot lists them as missing"));
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

/// The name a user types to confirm: the hosted project's ref, else
/// `host:port/database`, else the Storage URL.
fn confirmation_name(project: &Project) -> String {
    if let Some(db) = &project.db {
        return db.project_ref().unwrap_or_else(|| db.display());
    }
    if let Some(r) = project
        .url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(|h| h.split('.').next().unwrap_or(h).to_string()))
    {
        return r;
    }
    project.storage.as_ref().map(|s| s.url.clone()).unwrap_or_default()
}

fn ask(prompt: &str) -> Result<String, CliError> {
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CliError::usage(format!("cannot read the answer: {e}")))?;
    Ok(line.trim().to_string())
}

pub fn cmd_restore_project(ctx: &Context, a: &args::RestoreArgs) -> CliResult {
    if !a.include.is_empty() {
        return Err(CliError::usage("--include goes with --target DIR"));
    }
    for t in a.tables.iter().chain(&a.exclude_tables) {
        if !t.contains('.') {
            return Err(CliError::usage(format!("tables are given as SCHEMA.TABLE, not {t:?}")));
        }
    }
    let repo = ctx.open()?;
    let (id, snap, parts) = match &a.snapshot {
        Some(spec) => {
            let (id, snap) = repo.find_snapshot(spec)?;
            (id, snap, Parts::parse(a.only.as_deref())?)
        }
        None if std::io::stdin().is_terminal() && !ctx.out.json => pick_snapshot(&repo)?,
        None => return Err(CliError::usage("give the snapshot to restore (an id or `latest`)")),
    };
    let source = SettingsSource::load(a.project.env_file.as_deref())?;
    let project = load_project(&source, &url_flags(&a.project), parts)?;
    let identity = project.identity();
    // The same lock as a backup of this project: no nightly create mid-restore.
    let scope = format!("create {identity}");
    let _lock = ctx.lock_scoped(&repo, LockKind::Shared, &format!("restore into {identity}"), Some(&scope))?;
    let opts = RestoreOptions {
        parts,
        db: DbRestoreOptions {
            tables: a.tables.clone(),
            schemas: a.schemas.clone(),
            exclude_tables: a.exclude_tables.clone(),
            disable_cron: a.disable_cron,
        },
        buckets: a.buckets.clone(),
        dry_run: a.dry_run,
        emit_sql: a.emit_sql.clone(),
        storage_concurrency: a.storage_concurrency,
    };
    if !a.dry_run && !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage("restore overwrites the project: confirm on a terminal, or pass --yes"));
        }
        let rt = tokio::runtime::Runtime::new().map_err(|e| CliError::new(exit::ERROR, e.to_string()))?;
        let now = restore::target_summary(&project, rt.handle())?;
        eprintln!("Restore will OVERWRITE this project:");
        eprintln!("  database:    {}", now.database.as_deref().unwrap_or("(not restored)"));
        eprintln!("  project URL: {}", now.project_url.as_deref().unwrap_or("(not set)"));
        eprintln!(
            "  now holds:   {} tables, about {} rows, {} objects",
            now.tables,
            now.rows,
            now.objects.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        );
        eprintln!("with snapshot {} of {} from {}", id.short(), local_time(&snap.time), snap.source.describe());
        let name = confirmation_name(&project);
        if ask(&format!("Type {name} to continue: "))? != name {
            return Err(CliError::usage("not confirmed; nothing was changed"));
        }
        let not_empty = !now.is_empty();
        if not_empty || snap.source.describe() == identity {
            let why =
                if snap.source.describe() == identity { "it is the snapshot's own source" } else { "it is not empty" };
            if ask(&format!("The project will be replaced and {why}. Type {name} again to confirm: "))? != name {
                return Err(CliError::usage("not confirmed; nothing was changed"));
            }
        }
    }
    let report = restore::restore_project(&repo, &snap, &project, &opts)?;
    let diffs = if a.verify && !a.dry_run {
        Some(verify_project(&repo, &snap, &project, &VerifyOptions { parts, quick: false })?)
    } else {
        None
    };
    for w in &report.warnings {
        super::log::warn(&w.to_string());
    }
    if ctx.out.json {
        let mut v = serde_json::to_value(&report).expect("report serialises");
        v["snapshot_id"] = json!(id);
        if let Some(d) = &diffs {
            v["differences"] = json!(d);
        }
        ctx.out.json(&v);
        return match diffs {
            Some(d) if !d.is_empty() => {
                Err(CliError::new(exit::DIFFERENT, "the restored project differs from the snapshot").after_json())
            }
            _ => Ok(exit::OK),
        };
    }
    if let Some(plan) = &report.plan {
        println!("{}", serde_json::to_string_pretty(plan).expect("plan serialises"));
        if a.dry_run {
            println!("dry run: nothing was changed");
            return Ok(exit::OK);
        }
    }
    for n in &report.notices {
        super::log::info(&n.to_string());
    }
    for s in &report.skipped_statements {
        super::log::info(&format!(
            "not run ({}): {}",
            s["rule"].as_str().unwrap_or_default(),
            s["statement"].as_str().unwrap_or_default()
        ));
    }
    if !ctx.out.quiet {
        println!(
            "restored snapshot {}: {} tables, {} rows, {} statements; {} buckets, {} objects uploaded ({}), {} unchanged, {} deleted",
            id.short(),
            report.tables,
            report.rows,
            report.statements,
            report.buckets,
            report.objects_uploaded,
            bytes(report.bytes_uploaded),
            report.objects_unchanged,
            report.objects_deleted
        );
        if !report.login_roles_needing_password.is_empty() {
            println!(
                "login roles restored without a password (set one with ALTER ROLE … PASSWORD): {}",
                report.login_roles_needing_password.join(", ")
            );
        }
    }
    match diffs {
        Some(d) => print_differences(ctx, &id, &d),
        None => Ok(exit::OK),
    }
}

fn print_differences(ctx: &Context, id: &crate::repo::id::Id, diffs: &[Difference]) -> CliResult {
    if ctx.out.json {
        ctx.out.json(&json!({"snapshot_id": id, "differences": diffs}));
    } else {
        if !diffs.is_empty() {
            println!("{:<11} {:<60} {:<24} project", "kind", "object", "snapshot");
        }
        for d in diffs {
            println!("{:<11} {:<60} {:<24} {}", d.kind, d.object, d.snapshot, d.project);
        }
        println!("{} difference(s) between the project and snapshot {}", diffs.len(), id.short());
    }
    if diffs.is_empty() {
        Ok(exit::OK)
    } else {
        Err(CliError::new(
            exit::DIFFERENT,
            format!("the project differs from the snapshot in {} place(s)", diffs.len()),
        )
        .after_json())
    }
}

pub fn cmd_verify(ctx: &Context, a: &args::VerifyArgs) -> CliResult {
    let parts = Parts::parse(a.only.as_deref())?;
    let source = SettingsSource::load(a.project.env_file.as_deref())?;
    let project = load_project(&source, &url_flags(&a.project), parts)?;
    let repo = ctx.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let diffs = verify_project(&repo, &snap, &project, &VerifyOptions { parts, quick: a.quick })?;
    print_differences(ctx, &id, &diffs)
}

pub fn cmd_dump_table(ctx: &Context, spec: &str, table: &str, format: &str) -> CliResult {
    let (schema, name) =
        table.split_once('.').ok_or_else(|| CliError::usage(format!("--table takes SCHEMA.TABLE, not {table:?}")))?;
    let repo = ctx.open()?;
    let (_, snap) = repo.find_snapshot(spec)?;
    let path = snap.extra["database"]["tables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["schema"] == schema && t["name"] == name)
        .and_then(|t| t["path"].as_str())
        .map(String::from)
        .ok_or_else(|| CliError::new(exit::NOT_FOUND, format!("the snapshot has no rows of table {table}")))?;
    let stdout = std::io::stdout();
    crate::repo::sysinfo::enlarge_pipe(&stdout);
    let lock = stdout.lock();
    let fmt = match format {
        "copy" => None,
        "json" => Some(copytext::Format::Json),
        _ => Some(copytext::Format::Csv),
    };
    match fmt {
        None => {
            let mut out = std::io::BufWriter::new(lock);
            crate::repo::ops::restore::dump(&repo, &snap, &path, &mut out)?;
        }
        Some(f) => {
            let mut w = copytext::TableWriter::new(std::io::BufWriter::new(lock), f);
            crate::repo::ops::restore::dump(&repo, &snap, &path, &mut w)?;
            w.finish().map_err(|e| CliError::new(exit::ERROR, format!("standard output: {e}")))?;
        }
    }
    Ok(exit::OK)
}

/// The interactive picker: project snapshots newest first (date, source,
/// parts, size), then the parts to restore.
fn pick_snapshot(repo: &Repository) -> Result<(Id, Snapshot, Parts), CliError> {
    let (mut snaps, _) = repo.list_snapshots()?;
    snaps.retain(|(_, s)| s.extra["kind"] == "supabase");
    snaps.reverse();
    if snaps.is_empty() {
        return Err(CliError::new(exit::NOT_FOUND, "the repository holds no project snapshots"));
    }
    eprintln!("  #  {:<10} {:<19}  {:<32} {:<12} {:>12}", "id", "time", "source", "parts", "size");
    for (i, (id, s)) in snaps.iter().enumerate().take(30) {
        let parts: Vec<&str> = s.extra["parts"].as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
        eprintln!(
            "{:>3}  {:<10} {:<19}  {:<32} {:<12} {:>12}",
            i + 1,
            id.short(),
            local_time(&s.time),
            s.source.describe(),
            parts.join("+"),
            bytes(s.summary.bytes_read)
        );
    }
    let n: usize = ask("Restore which snapshot (number)? ")?
        .parse()
        .ok()
        .filter(|n| (1..=snaps.len().min(30)).contains(n))
        .ok_or_else(|| CliError::usage("no such number; nothing was changed"))?;
    let (id, snap) = snaps.swap_remove(n - 1);
    let has = |p: &str| snap.extra["parts"].as_array().is_some_and(|a| a.iter().any(|x| x == p));
    let parts = if has("db") && has("storage") {
        match ask("Restore what: [a]ll, [d]atabase, [s]torage? (a) ")?.as_str() {
            "" | "a" | "all" => Parts::All,
            "d" | "db" | "database" => Parts::Db,
            "s" | "storage" => Parts::Storage,
            other => return Err(CliError::usage(format!("{other:?} is not a choice; nothing was changed"))),
        }
    } else if has("db") {
        Parts::Db
    } else {
        Parts::Storage
    };
    Ok((id, snap, parts))
}
