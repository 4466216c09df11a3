//! `snap create` of a project: the database streams (and Storage objects)
//! written into one snapshot through the engine's snapshot writer.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use super::dbdump::{self, DbManifest, DbObserver, DbOptions};
use super::error::{SupabaseError, SupabaseResult};
use super::project::{Parts, Project};
use crate::repo::archiver::{SnapshotMeta, SnapshotWriter};
use crate::repo::format::snapshot::{Snapshot, Source};
use crate::repo::format::tree::Node;
use crate::repo::id::Id;
use crate::repo::repository::Repository;
use crate::repo::saver::Progress;

pub struct BackupOptions {
    pub parts: Parts,
    pub jobs: usize,
    pub exclude_tables: Vec<String>,
    pub exclude_buckets: Vec<String>,
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub time: Option<chrono::DateTime<Utc>>,
}

pub struct BackupReport {
    pub id: Id,
    pub snapshot: Snapshot,
    pub db: Option<DbManifest>,
    pub warnings: Vec<String>,
}

/// Collects warnings and forwards them to the caller's observer.
struct Observer<'a> {
    inner: &'a dyn DbObserver,
    warnings: std::sync::Mutex<Vec<String>>,
}

impl DbObserver for Observer<'_> {
    fn stream_started(&self, name: &str) {
        self.inner.stream_started(name)
    }
    fn stream_done(&self, name: &str, bytes: u64) {
        self.inner.stream_done(name, bytes)
    }
    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(message.to_string());
        self.inner.warn(message)
    }
}

pub fn backup_project(
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    project: &Project,
    opts: &BackupOptions,
    observer: &dyn DbObserver,
) -> SupabaseResult<BackupReport> {
    if opts.parts.storage() && project.storage.is_some() {
        return Err(SupabaseError::Config(
            "Storage backup is not available in this build yet; back up the database with --only db".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SupabaseError::Config(format!("cannot start the async runtime: {e}")))?;
    let observer = Observer { inner: observer, warnings: Default::default() };
    let started = Utc::now();
    let mtime_ns = started.timestamp_nanos_opt().unwrap_or(0);

    let mut writer = SnapshotWriter::new(repo, progress)?;
    let mut db_manifest = None;
    if let Some(db) = project.db.as_ref().filter(|_| opts.parts.db()) {
        let saver = writer.content_saver();
        let (streams, manifest) = dbdump::backup_database(
            runtime.handle(),
            db,
            &saver,
            &DbOptions { jobs: opts.jobs, exclude_tables: opts.exclude_tables.clone() },
            &observer,
        )?;
        drop(saver);
        for s in streams {
            let mut node =
                Node::new(s.path.last().expect("stream path").as_bytes(), crate::repo::format::tree::NodeKind::File);
            node.mtime_ns = mtime_ns;
            if let Some(t) = manifest.tables.iter().find(|t| t.path == s.path.join("/")) {
                node.attrs.insert("rows".into(), json!(t.rows));
                node.attrs.insert("table".into(), json!(format!("{}.{}", t.schema, t.name)));
            }
            writer.add_content(s.path.iter().map(|c| c.as_bytes().to_vec()).collect(), node, s.content)?;
        }
        db_manifest = Some(manifest);
    }

    let parts: Vec<&str> = [db_manifest.as_ref().map(|_| "db")].into_iter().flatten().collect();
    let extra = json!({
        "kind": "supabase",
        "format": 1,
        "project_url": project.url,
        "parts": parts,
        "database": db_manifest,
        "warnings": *observer.warnings.lock().unwrap_or_else(|p| p.into_inner()),
    });
    let meta = SnapshotMeta {
        time: opts.time,
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        source: Source::Project { url: project.identity() },
        extra,
    };
    let (id, snapshot) = writer.finish(meta)?;
    let warnings = observer.warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(BackupReport { id, snapshot, db: db_manifest, warnings })
}
