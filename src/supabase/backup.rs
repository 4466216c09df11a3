//! `snap create` of a project: the database streams (and Storage objects)
//! written into one snapshot through the engine's snapshot writer.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use super::dbdump::{self, DbManifest, DbObserver, DbOptions, PreviousTable};
use super::error::{SupabaseError, SupabaseResult};
use super::project::{Parts, Project};
use super::storage_api::StorageClient;
use super::storage_backup::{
    self, repository_bucket, PreviousObject, PreviousObjects, StorageEntry, StorageManifest, StorageObserver,
    StorageOptions,
};
use crate::repo::archiver::{SnapshotMeta, SnapshotWriter};
use crate::repo::format::snapshot::{Snapshot, Source};
use crate::repo::format::tree::Node;
use crate::repo::format::tree::NodeKind;
use crate::repo::id::Id;
use crate::repo::ops::walk;
use crate::repo::repository::Repository;
use crate::repo::saver::Progress;

pub struct BackupOptions {
    pub parts: Parts,
    pub storage_concurrency: usize,
    pub allow_partial: bool,
    /// Where the repository is, to skip its bucket if it lives in the project.
    pub repository_location: String,
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
    pub storage: Option<StorageManifest>,
    pub warnings: Vec<String>,
}

/// What the caller sees of a backup: database streams and Storage objects.
pub trait BackupObserver: DbObserver + StorageObserver {}
impl<T: DbObserver + StorageObserver> BackupObserver for T {}

/// Collects warnings and forwards everything to the caller's observer.
struct Observer<'a> {
    inner: &'a dyn BackupObserver,
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
        DbObserver::warn(self.inner, message)
    }
}

impl StorageObserver for Observer<'_> {
    fn objects_listed(&self, bucket: &str, count: usize) {
        self.inner.objects_listed(bucket, count)
    }
    fn object_done(&self, bytes: u64, downloaded: bool) {
        self.inner.object_done(bytes, downloaded)
    }
    fn warn(&self, message: &str) {
        DbObserver::warn(self, message)
    }
}

/// The newest earlier snapshot of this project that holds `part`.
fn newest_with_part<'s>(snapshots: &'s [(Id, Snapshot)], identity: &str, part: &str) -> Option<&'s Snapshot> {
    snapshots.iter().rev().map(|(_, s)| s).find(|s| {
        matches!(&s.source, Source::Project { url } if url == identity)
            && s.extra["parts"].as_array().is_some_and(|p| p.iter().any(|x| x == part))
    })
}

/// How each table stream (by path) was stored in the newest earlier
/// snapshot of the database, so that a table keeps deduplicating and
/// keeps its dictionary.
fn previous_tables(snapshots: &[(Id, Snapshot)], identity: &str) -> HashMap<String, PreviousTable> {
    let Some(snap) = newest_with_part(snapshots, identity, "db") else { return HashMap::new() };
    let tables = snap.extra["database"]["tables"].as_array().map(Vec::as_slice).unwrap_or_default();
    tables
        .iter()
        .filter_map(|t| {
            let chunk_scale = u8::try_from(t["chunk_scale"].as_u64().unwrap_or(0)).ok()?;
            let dictionary = t["dictionary"].as_str().and_then(|d| d.parse().ok());
            Some((t["path"].as_str()?.to_string(), PreviousTable { chunk_scale, dictionary }))
        })
        .collect()
}

/// Objects of the newest earlier snapshot of this project that holds
/// Storage, for incremental backups.
fn previous_objects(
    repo: &Repository,
    snapshots: &[(Id, Snapshot)],
    identity: &str,
) -> SupabaseResult<PreviousObjects> {
    let mut map = PreviousObjects::new();
    let Some(snap) = newest_with_part(snapshots, identity, "storage") else { return Ok(map) };
    walk::visit(repo, &snap.tree, &mut Vec::new(), &mut |path, node| {
        if path.len() == 1 {
            return Ok(path[0] == b"storage");
        }
        if node.kind == NodeKind::File {
            let attr = |k: &str| node.attrs.get(k).and_then(|v| v.as_str()).map(String::from);
            if let (Some(b), Some(n)) = (attr("bucket"), attr("name")) {
                map.insert((b, n), PreviousObject { node: node.clone() });
            }
        }
        Ok(true)
    })?;
    Ok(map)
}

pub fn backup_project(
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    project: &Project,
    opts: &BackupOptions,
    observer: &dyn BackupObserver,
) -> SupabaseResult<BackupReport> {
    let runtime = super::runtime()?;
    let observer = Observer { inner: observer, warnings: Default::default() };
    let started = Utc::now();
    let mtime_ns = started.timestamp_nanos_opt().unwrap_or(0);

    let (earlier, _) = repo.list_snapshots()?;
    let mut writer = SnapshotWriter::new(repo.clone(), progress)?;
    let mut db_manifest = None;
    if let Some(db) = project.db.as_ref().filter(|_| opts.parts.db()) {
        let saver = writer.content_saver();
        let (streams, manifest) = dbdump::backup_database(
            runtime.handle(),
            db,
            &saver,
            &DbOptions {
                jobs: opts.jobs,
                exclude_tables: opts.exclude_tables.clone(),
                previous_tables: previous_tables(&earlier, &project.identity()),
            },
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

    let mut storage_manifest = None;
    if let Some(st) = project.storage.as_ref().filter(|_| opts.parts.storage()) {
        let client = StorageClient::new(&st.url, &st.service_key).map_err(|e| SupabaseError::Storage(e.to_string()))?;
        let previous = previous_objects(&repo, &earlier, &project.identity())?;
        let saver = writer.content_saver();
        let sopts = StorageOptions {
            concurrency: opts.storage_concurrency,
            exclude_buckets: opts.exclude_buckets.clone(),
            allow_partial: opts.allow_partial,
            repository_bucket: repository_bucket(&opts.repository_location, &st.url),
        };
        let mut sink = |entry: StorageEntry| -> SupabaseResult<()> {
            let bytes = |p: &[String]| p.iter().map(|c| c.as_bytes().to_vec()).collect::<Vec<_>>();
            match entry {
                StorageEntry::Bucket { path, node } => writer.add_dir(bytes(&path), node)?,
                StorageEntry::New { path, node, content } => writer.add_content(bytes(&path), node, content)?,
                StorageEntry::Reused { path, node } => writer.add_existing(bytes(&path), node).map_err(|e| {
                    SupabaseError::Storage(format!(
                        "{}: its data from the previous snapshot is no longer in the repository ({e}); run the backup again",
                        path.join("/")
                    ))
                })?,
            }
            Ok(())
        };
        let cx = storage_backup::Capture {
            handle: runtime.handle(),
            client: &client,
            saver: &saver,
            previous: &previous,
            opts: &sopts,
            observer: &observer,
            capture_ns: mtime_ns,
        };
        let manifest = storage_backup::backup_storage(&cx, &mut sink)?;
        drop(saver);
        storage_manifest = Some(manifest);
    }

    let parts: Vec<&str> = [db_manifest.as_ref().map(|_| "db"), storage_manifest.as_ref().map(|_| "storage")]
        .into_iter()
        .flatten()
        .collect();
    let extra = json!({
        "kind": "supabase",
        "format": 1,
        "project_url": project.url,
        "parts": parts,
        "database": db_manifest,
        "storage": storage_manifest,
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
    Ok(BackupReport { id, snapshot, db: db_manifest, storage: storage_manifest, warnings })
}
