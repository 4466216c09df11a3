//! `snap restore ID` into a project: preflight, then Storage deletions, the
//! database in one transaction, Storage uploads, and the object rows'
//! owners, versions and times put back.
//!
//! Storage cannot join the database transaction. The order keeps rows and
//! bytes consistent and makes a re-run finish the job:
//! 1. objects in the restored buckets that the snapshot lacks are deleted
//!    first, while their `storage.objects` rows still exist (the API cannot
//!    delete an object whose row is gone);
//! 2. the database commits (the snapshot's `storage.objects` rows with it);
//! 3. every bucket is created or updated and every object uploaded with
//!    upsert (skipped when the project already has the same bytes);
//! 4. uploads give objects new versions and times: the snapshot's owner,
//!    version, timestamps and metadata are written back to the rows.
//!
//! If it stops after 2, the database is restored and some objects are not:
//! `snap restore ID --only storage` finishes the job.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::dbrestore::{DbRestoreOptions, DbRestoreReport, DbSnapshot, Restorer, StreamSource};
use super::error::{SupabaseError, SupabaseResult};
use super::project::{Parts, Project};
use super::storage_api::{ApiError, StorageClient, UploadMeta, TUS_CHUNK};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::format::tree::NodeKind;
use crate::repo::ops::{restore as engine_restore, walk};
use crate::repo::repository::Repository;

/// Streams of a snapshot in the repository.
pub struct SnapshotStreams<'a> {
    pub repo: &'a Repository,
    pub snapshot: &'a Snapshot,
}

impl StreamSource for SnapshotStreams<'_> {
    fn read_text(&self, path: &str) -> SupabaseResult<String> {
        let mut buf = Vec::new();
        engine_restore::dump(self.repo, self.snapshot, path, &mut buf)?;
        String::from_utf8(buf).map_err(|_| SupabaseError::Database(format!("{path} is not UTF-8 text")))
    }
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> SupabaseResult<u64> {
        Ok(engine_restore::dump(self.repo, self.snapshot, path, out)?)
    }
}

/// An object of the snapshot, as restore needs it.
#[derive(Debug, Clone)]
pub struct SnapshotObject {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub attrs: serde_json::Map<String, Value>,
}

/// Buckets (settings) and their objects, from the snapshot's tree.
pub fn snapshot_storage(repo: &Repository, snapshot: &Snapshot) -> SupabaseResult<Vec<(Value, Vec<SnapshotObject>)>> {
    let mut out: Vec<(Value, Vec<SnapshotObject>)> = Vec::new();
    let Some(storage) = walk::find_node(repo, &snapshot.tree, &[b"storage".to_vec()]).ok().flatten() else {
        return Ok(out);
    };
    let Some(tree) = storage.subtree else { return Ok(out) };
    walk::visit(repo, &tree, &mut vec![b"storage".to_vec()], &mut |path, node| {
        if path.len() == 2 && node.kind == NodeKind::Dir {
            out.push((node.attrs.get("bucket").cloned().unwrap_or(Value::Null), Vec::new()));
        } else if node.kind == NodeKind::File {
            if let (Some(last), Some(name)) = (out.last_mut(), node.attrs.get("name").and_then(Value::as_str)) {
                last.1.push(SnapshotObject {
                    path: crate::repo::archiver::display_path(path),
                    name: name.to_string(),
                    size: node.size,
                    attrs: node.attrs.clone().into_iter().collect(),
                });
            }
        }
        Ok(true)
    })?;
    Ok(out)
}

pub struct RestoreOptions {
    pub parts: Parts,
    pub db: DbRestoreOptions,
    pub buckets: Vec<String>,
    pub dry_run: bool,
    pub emit_sql: Option<PathBuf>,
    pub storage_concurrency: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub tables: usize,
    pub rows: u64,
    pub statements: usize,
    pub replica_mode: bool,
    pub skipped_statements: Vec<Value>,
    pub notices: Vec<String>,
    pub warnings: Vec<String>,
    pub buckets: usize,
    pub objects_uploaded: u64,
    pub bytes_uploaded: u64,
    pub objects_unchanged: u64,
    pub objects_deleted: u64,
    pub object_rows_restored: u64,
    pub login_roles_needing_password: Vec<String>,
    /// With --dry-run: what would happen.
    pub plan: Option<Value>,
}

fn storage_err(e: ApiError) -> SupabaseError {
    SupabaseError::Storage(e.to_string())
}

/// What the project holds now, for the confirmation prompt.
#[derive(Debug, Serialize)]
pub struct TargetSummary {
    pub database: Option<String>,
    pub project_url: Option<String>,
    pub tables: i64,
    /// Tables outside platform schemas: the user's.
    pub user_tables: i64,
    pub rows: i64,
    pub objects: Option<u64>,
}

impl TargetSummary {
    /// Whether the project holds anything a restore would destroy.
    pub fn is_empty(&self) -> bool {
        self.user_tables == 0 && self.rows == 0 && self.objects.unwrap_or(0) == 0
    }
}

pub fn target_summary(project: &Project, handle: &tokio::runtime::Handle) -> SupabaseResult<TargetSummary> {
    let mut s = TargetSummary {
        database: project.db.as_ref().map(|d| d.display()),
        project_url: project.url.clone(),
        tables: 0,
        user_tables: 0,
        rows: 0,
        objects: None,
    };
    if let Some(db) = &project.db {
        let c = handle.block_on(db.connect())?;
        let row = handle
            .block_on(c.query_one(
                "SELECT count(*), coalesce(sum(greatest(c.reltuples, 0))::int8, 0) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
                   AND n.nspname NOT IN ('realtime', '_realtime', 'extensions', 'graphql', 'vault', 'pgsodium')",
                &[],
            ))
            .map_err(SupabaseError::db)?;
        s.tables = row.get(0);
        s.rows = row.get(1);
        let (user, _) = handle.block_on(super::catalog::schemas(&c))?;
        let n: i64 = handle
            .block_on(c.query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)",
                &[&user],
            ))
            .map_err(SupabaseError::db)?
            .get(0);
        s.user_tables = n;
    }
    if let Some(st) = &project.storage {
        let client = StorageClient::new(&st.url, &st.service_key).map_err(storage_err)?;
        let mut n = 0;
        for b in handle.block_on(client.list_buckets()).map_err(storage_err)? {
            if b.kind.as_deref().is_none_or(|k| k == "STANDARD") {
                n += handle.block_on(client.list_objects(&b.id)).map_err(storage_err)?.len() as u64;
            }
        }
        s.objects = Some(n);
    }
    Ok(s)
}

pub fn restore_project(
    repo: &Arc<Repository>,
    snapshot: &Snapshot,
    project: &Project,
    opts: &RestoreOptions,
) -> SupabaseResult<RestoreReport> {
    if snapshot.extra["kind"] != "supabase" {
        return Err(SupabaseError::Config(
            "this snapshot is not of a Supabase project; restore its files with --target DIR".into(),
        ));
    }
    repo.load_index()?;
    let runtime = super::runtime()?;
    let handle = runtime.handle();
    let mut report = RestoreReport::default();
    let source = SnapshotStreams { repo, snapshot };
    let parts: Vec<String> =
        snapshot.extra["parts"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(String::from)).collect();
    let do_db = opts.parts.db() && parts.iter().any(|p| p == "db") && opts.buckets.is_empty();
    let do_storage = opts.parts.storage()
        && parts.iter().any(|p| p == "storage")
        && opts.db.tables.is_empty()
        && opts.db.schemas.is_empty();
    if opts.parts == Parts::Db && !parts.iter().any(|p| p == "db") {
        return Err(SupabaseError::Config("the snapshot has no database part".into()));
    }
    if opts.parts == Parts::Storage && !parts.iter().any(|p| p == "storage") {
        return Err(SupabaseError::Config("the snapshot has no Storage part".into()));
    }
    // A snapshot rewritten by `repair snapshots` lacks what was damaged:
    // say so, never restore a table half, and never delete a target object
    // because its copy in the snapshot was lost.
    let lost_db: Vec<&str> = snapshot.lost.iter().filter(|p| p.starts_with("/db")).map(String::as_str).collect();
    if do_db && !lost_db.is_empty() {
        return Err(SupabaseError::Config(format!(
            "this snapshot was repaired after damage and lost database files ({}); restore an older snapshot, \
             or only its Storage part with --only storage",
            lost_db.join(", ")
        )));
    }
    let lost_buckets: std::collections::HashSet<&str> =
        snapshot.lost.iter().filter_map(|p| p.strip_prefix("/storage/")?.split('/').next()).collect();
    if do_storage && !lost_buckets.is_empty() {
        report.warnings.push(format!(
            "this snapshot was repaired after damage; lost objects are not restored, and the target's objects in \
             the affected buckets are not deleted: {}",
            snapshot.lost.iter().filter(|p| p.starts_with("/storage/")).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let db_manifest = &snapshot.extra["database"];
    let driver = super::current_thread_runtime()?;
    let restorer = project.db.as_ref().map(|target| Restorer {
        handle,
        driver: &driver,
        target,
        source: &source,
        snapshot: DbSnapshot { manifest: db_manifest },
        opts: &opts.db,
    });

    if do_db {
        let r = restorer.as_ref().ok_or_else(|| SupabaseError::Config("SUPABASE_DB_URL is not set".into()))?;
        preflight(handle, r, db_manifest, project, snapshot, &mut report)?;
    }
    let storage = match (&project.storage, do_storage) {
        (Some(st), true) => Some(StorageClient::new(&st.url, &st.service_key).map_err(storage_err)?),
        (None, true) if opts.parts == Parts::Storage => {
            return Err(SupabaseError::Config(
                "SUPABASE_URL or SUPABASE_STORAGE_URL is needed to restore Storage".into(),
            ))
        }
        _ => None,
    };
    let buckets = if storage.is_some() { snapshot_storage(repo, snapshot)? } else { Vec::new() };
    let buckets: Vec<(Value, Vec<SnapshotObject>)> = buckets
        .into_iter()
        .filter(|(b, _)| opts.buckets.is_empty() || opts.buckets.iter().any(|x| Some(x.as_str()) == b["id"].as_str()))
        .collect();
    for x in &opts.buckets {
        if !buckets.iter().any(|(b, _)| b["id"].as_str() == Some(x)) {
            return Err(SupabaseError::Config(format!("--bucket {x}: the snapshot has no such bucket")));
        }
    }

    // What the project has now, per restored bucket: name → (size, etag).
    let mut present: HashMap<String, PresentObjects> = HashMap::new();
    if let Some(client) = &storage {
        let existing: Vec<String> =
            handle.block_on(client.list_buckets()).map_err(storage_err)?.into_iter().map(|b| b.id).collect();
        for (b, _) in &buckets {
            let id = b["id"].as_str().unwrap_or_default().to_string();
            let listed = if existing.contains(&id) {
                handle.block_on(client.list_objects(&id)).map_err(storage_err)?
            } else {
                Vec::new()
            };
            present.insert(id, listed.into_iter().map(|l| (l.name, (l.size, l.etag))).collect());
        }
    }

    if opts.dry_run || opts.emit_sql.is_some() {
        let mut plan = json!({});
        if do_db {
            let r = restorer.as_ref().expect("checked above");
            let mut scratch = DbRestoreReport::default();
            let me = r.target.user.clone();
            let major = db_manifest["server_version_num"].as_i64().unwrap_or(0) / 10000;
            let steps = r.plan(&me, major.max(10) as u32, &mut scratch)?;
            let mut by_phase: Vec<(String, usize)> = Vec::new();
            for s in steps.iter().filter(|s| !s.sql.is_empty()) {
                match by_phase.iter_mut().find(|(p, _)| p == s.phase) {
                    Some(e) => e.1 += 1,
                    None => by_phase.push((s.phase.to_string(), 1)),
                }
            }
            let tables: Vec<Value> = r
                .tables_to_load()
                .into_iter()
                .map(|(s, n, _, rows)| json!({"table": format!("{s}.{n}"), "rows": rows}))
                .collect();
            plan["database"] = json!({
                "drop_user_schemas_and_recreate": opts.db.tables.is_empty() && opts.db.schemas.is_empty(),
                "statements": by_phase.iter().map(|(p, n)| json!({"phase": p, "count": n})).collect::<Vec<_>>(),
                "tables_to_load": tables,
                "skipped_statements": scratch.skipped.iter().map(|(s, r)| json!({"statement": s, "rule": r})).collect::<Vec<_>>(),
            });
            if let Some(dir) = &opts.emit_sql {
                std::fs::create_dir_all(dir).map_err(|e| SupabaseError::Config(format!("{}: {e}", dir.display())))?;
                // It may hold role password hashes: readable by its owner only.
                let mut f = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(dir.join("restore.sql"))
                        .map_err(|e| SupabaseError::Config(format!("{}: {e}", dir.display())))?
                };
                let mut text = String::from("-- The cleaned SQL snap restore runs, in order, in one transaction.\n-- Table rows load at the marked point from the snapshot's db/data streams (`snap restore ID --target DIR` writes them out).\nBEGIN;\n");
                for s in &steps {
                    if s.phase == "data" {
                        text.push_str("\n-- data: TRUNCATE the platform tables restored, SET LOCAL session_replication_role = replica, COPY each db/data stream, large objects, sequences\n\n");
                    } else {
                        text.push_str(&format!("-- {}\n{};\n", s.phase, s.sql));
                    }
                }
                text.push_str("COMMIT;\n");
                f.write_all(text.as_bytes()).map_err(|e| SupabaseError::Config(format!("{}: {e}", dir.display())))?;
            }
        }
        if storage.is_some() {
            let mut b = Vec::new();
            for (bucket, objects) in &buckets {
                let id = bucket["id"].as_str().unwrap_or_default();
                let have = present.get(id).cloned().unwrap_or_default();
                let upload = objects.iter().filter(|o| !same_object(o, have.get(&o.name))).count();
                let delete = have.keys().filter(|n| !objects.iter().any(|o| &&o.name == n)).count();
                b.push(json!({"bucket": id, "objects": objects.len(), "upload": upload, "delete": delete}));
            }
            plan["storage"] = json!(b);
        }
        report.plan = Some(plan);
        if opts.dry_run {
            return Ok(report);
        }
    }

    // 1. Deletions while their rows still exist.
    if let Some(client) = &storage {
        for (bucket, objects) in &buckets {
            let id = bucket["id"].as_str().unwrap_or_default();
            if lost_buckets.contains(super::storage_backup::escape_segment(id).as_str()) {
                continue;
            }
            let keep: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
            let extra: Vec<String> = present
                .get(id)
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|n| !keep.contains(n.as_str()))
                .cloned()
                .collect();
            if !extra.is_empty() {
                handle.block_on(client.delete_objects(id, &extra)).map_err(storage_err)?;
                report.objects_deleted += extra.len() as u64;
            }
        }
    }
    // 2. The database, atomically.
    if do_db {
        let r = restorer.as_ref().expect("checked above");
        let mut db = DbRestoreReport::default();
        r.run(&mut db)?;
        report.tables = db.tables;
        report.rows = db.rows;
        report.statements = db.statements;
        report.replica_mode = db.replica_mode;
        report.skipped_statements = db.skipped.iter().map(|(s, r)| json!({"statement": s, "rule": r})).collect();
        report.notices.extend(db.notices);
        report.login_roles_needing_password = DbSnapshot { manifest: db_manifest }.manifest
            ["login_roles_without_password"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
    }
    // 3. Buckets and objects.
    if let Some(client) = &storage {
        for (bucket, objects) in &buckets {
            handle.block_on(client.put_bucket(bucket)).map_err(storage_err)?;
            report.buckets += 1;
            let id = bucket["id"].as_str().unwrap_or_default().to_string();
            let have = present.get(&id).cloned().unwrap_or_default();
            let todo: Vec<&SnapshotObject> = objects.iter().filter(|o| !same_object(o, have.get(&o.name))).collect();
            report.objects_unchanged += (objects.len() - todo.len()) as u64;
            upload_all(handle, client, repo, snapshot, &id, &todo, opts.storage_concurrency.max(1))?;
            report.objects_uploaded += todo.len() as u64;
            report.bytes_uploaded += todo.iter().map(|o| o.size).sum::<u64>();
        }
        // 4. Owners, versions and times back on the rows.
        if let Some(r) = &restorer {
            let has_rows = db_manifest["tables"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["path"] == "db/data/storage/objects.sql"));
            if has_rows {
                report.object_rows_restored = r.restore_object_rows()?;
            }
        } else {
            report.warnings.push(
                "SUPABASE_DB_URL is not set: uploaded objects keep new versions and times (their rows were not corrected)".into(),
            );
        }
    }
    Ok(report)
}

/// Objects a bucket of the project holds now: name → (size, etag).
type PresentObjects = HashMap<String, (Option<u64>, Option<String>)>;

fn same_object(o: &SnapshotObject, have: Option<&(Option<u64>, Option<String>)>) -> bool {
    let Some((size, etag)) = have else { return false };
    let snap_etag = o.attrs.get("etag").and_then(Value::as_str).map(|e| e.trim_matches('"').to_string());
    *size == Some(o.size) && etag.is_some() && etag.as_deref().map(|e| e.trim_matches('"').to_string()) == snap_etag
}

/// Upload objects `concurrency` at a time, each streamed from the snapshot.
fn upload_all(
    handle: &tokio::runtime::Handle,
    client: &StorageClient,
    repo: &Arc<Repository>,
    snapshot: &Snapshot,
    bucket: &str,
    objects: &[&SnapshotObject],
    concurrency: usize,
) -> SupabaseResult<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed: std::sync::Mutex<Option<SupabaseError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= objects.len() || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    return;
                }
                let o = objects[i];
                let meta = UploadMeta {
                    size: o.size,
                    content_type: o.attrs.get("content_type").and_then(Value::as_str).map(String::from),
                    cache_control: o.attrs.get("cache_control").and_then(Value::as_str).map(String::from),
                    user_metadata: o.attrs.get("user_metadata").cloned(),
                };
                let body = || object_stream(repo, snapshot, &o.path);
                // Large objects go through the resumable endpoint, as the
                // platform asks; a server without one gets a standard upload.
                let result = handle.block_on(async {
                    if o.size > TUS_CHUNK as u64 && client.upload_resumable(bucket, &o.name, &meta, body()).await? {
                        return Ok(());
                    }
                    client.upload(bucket, &o.name, &meta, body).await
                });
                if let Err(e) = result {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(SupabaseError::Storage(format!(
                        "{e}; the database is restored: run `snap restore ID --only storage` to finish"
                    )));
                    return;
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An object's bytes from the snapshot as a stream of chunks, read by a
/// thread into a bounded channel (so no object is held in memory).
fn object_stream(
    repo: &Arc<Repository>,
    snapshot: &Snapshot,
    path: &str,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    let reader = ObjectReader::new(repo, snapshot, path);
    std::thread::spawn(move || reader.run(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// Reads one file's blobs in order on its own thread.
struct ObjectReader {
    repo: Arc<Repository>,
    /// The file's blobs, or why they cannot be had (never an empty body).
    ids: Result<Vec<crate::repo::id::Id>, String>,
}

impl ObjectReader {
    fn new(repo: &Arc<Repository>, snapshot: &Snapshot, path: &str) -> ObjectReader {
        let comps = walk::split_path(path);
        let ids = match walk::find_node(repo, &snapshot.tree, &comps) {
            Ok(Some(node)) => Ok(node.content),
            Ok(None) => Err(format!("{path} is not a file of the snapshot")),
            Err(e) => Err(format!("{path}: {e}")),
        };
        ObjectReader { repo: repo.clone(), ids }
    }

    fn run(self, tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>) {
        let ids = match self.ids {
            Ok(ids) => ids,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                return;
            }
        };
        let res = crate::repo::reader::for_each_blob_ordered(&self.repo, &ids, 2, |data| {
            tx.blocking_send(Ok(bytes::Bytes::from(data)))
                .map_err(|_| crate::repo::Error::Invalid("upload stopped".into()))
        });
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    }
}

fn preflight(
    handle: &tokio::runtime::Handle,
    r: &Restorer<'_>,
    manifest: &Value,
    project: &Project,
    snapshot: &Snapshot,
    report: &mut RestoreReport,
) -> SupabaseResult<()> {
    let c = handle.block_on(r.target.connect())?;
    let target_num: i32 = handle
        .block_on(c.query_one("SELECT current_setting('server_version_num')::int4", &[]))
        .map_err(SupabaseError::db)?
        .get(0);
    let source_num = manifest["server_version_num"].as_i64().unwrap_or(0) as i32;
    let mut problems = Vec::new();
    if target_num / 10000 < source_num / 10000 {
        problems.push(format!(
            "the project runs Postgres {} but the snapshot comes from {}: restore into a server of that major version or newer",
            target_num / 10000,
            source_num / 10000
        ));
    }
    let available: Vec<String> = handle
        .block_on(c.query("SELECT name::text FROM pg_available_extensions", &[]))
        .map_err(SupabaseError::db)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for e in manifest["extensions"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        if !available.iter().any(|a| a == name) {
            problems.push(format!("extension {name} is used by the snapshot but not offered by the project"));
        }
    }
    if let Err(e) = super::pgtools::find_tool("pg_dump", (target_num / 10000) as u32) {
        problems.push(e.to_string());
    }
    let may_create: bool = handle
        .block_on(c.query_one("SELECT has_database_privilege(current_database(), 'CREATE')", &[]))
        .map_err(SupabaseError::db)?
        .get(0);
    if !may_create {
        problems.push(format!("{} may not create schemas in this database", r.target.user));
    }
    if !problems.is_empty() {
        return Err(SupabaseError::Config(format!("the project cannot take this snapshot: {}", problems.join("; "))));
    }
    // Platform versions: differing migrators may mean other columns.
    let target_versions = handle.block_on(super::catalog::platform_versions(&c))?;
    for key in ["auth", "storage"] {
        let (a, b) = (&manifest["platform_versions"][key], &target_versions[key]);
        if !a.is_null() && !b.is_null() && a != b {
            report.warnings.push(format!(
                "{key} schema version differs (snapshot {a}, project {b}): columns the snapshot has are added, others are left at their defaults"
            ));
        }
    }
    // What acts on its own in another project.
    let other_project = project.identity() != snapshot.source.describe();
    if other_project {
        let rows = |schema: &str, table: &str| -> u64 {
            manifest["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["schema"] == schema && t["name"] == table)
                .and_then(|t| t["rows"].as_u64())
                .unwrap_or(0)
        };
        if rows("cron", "job") > 0 && !r.opts.disable_cron {
            report.warnings.push(format!(
                "{} pg_cron jobs will run in this project once restored (use --disable-cron to restore them inactive)",
                rows("cron", "job")
            ));
        }
        if rows("net", "http_request_queue") > 0 {
            report.warnings.push("queued pg_net requests will be sent from this project".into());
        }
        let ddl = r.source.read_text("db/schema.sql")? + &r.source.read_text("db/platform_schema.sql")?;
        if ddl.contains("supabase_functions\".\"http_request\"") || ddl.contains("\"net\".\"http_post\"") {
            report.warnings.push(
                "database webhooks (triggers calling http_request/http_post) will call out from this project".into(),
            );
        }
        if rows("vault", "secrets") > 0 {
            report
                .warnings
                .push("Vault secrets are encrypted with the source project's key and will not decrypt here".into());
        }
    }
    Ok(())
}
