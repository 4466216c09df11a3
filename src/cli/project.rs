//! The Supabase commands of the CLI: settings in, engine and Supabase
//! calls, a summary out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::output::{bytes, exit, ProgressDisplay};
use super::{args, parse_time, CliError, CliResult, Context};
use crate::repo::lock::LockKind;
use crate::repo::saver::Progress;
use crate::supabase::backup::{backup_project, BackupOptions};
use crate::supabase::dbdump::DbObserver;
use crate::supabase::project::{load_project, Parts};
use crate::supabase::settings::{SettingsSource, UrlFlags};
use crate::supabase::storage_backup::StorageObserver;
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

fn url_flags(p: &args::ProjectArgs) -> UrlFlags {
    UrlFlags { db_url: p.db_url.clone(), supabase_url: p.supabase_url.clone(), storage_url: p.storage_url.clone() }
}

/// Counts for the progress line; warnings go to stderr as they happen.
#[derive(Default)]
struct Counters {
    quiet: bool,
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
        if !self.quiet {
            eprintln!("snap: warning: {message}");
        }
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
    let observer = Arc::new(Counters { quiet: ctx.out.quiet, ..Default::default() });
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
        eprintln!("snap: {missing} objects could not be read; the snapshot lists them as missing");
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}
