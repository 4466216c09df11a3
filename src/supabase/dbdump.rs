//! Capturing the database as separate streams taken at one point in time.
//!
//! A coordinator connection opens a repeatable-read transaction and exports
//! its snapshot; `jobs` worker connections adopt it (`SET TRANSACTION
//! SNAPSHOT`) and stream one table each at a time with COPY, rows in
//! physical order as pg_dump reads them (see `SCAN_SETTINGS`); pg_dump
//! children get the same snapshot (`--snapshot`) for the schema. Roles are
//! global objects outside any snapshot.
//!
//! Streams (each a file in the snapshot under `db/`):
//! - `roles.sql`: pg_dumpall --roles-only (with passwords when readable)
//! - `schema.sql`: the user's schemas, schema only
//! - `platform_schema.sql`: the platform schemas' full DDL, which holds the
//!   user's own objects in them (triggers, policies, indexes, columns…);
//!   restore re-creates what the target lacks
//! - `data/<schema>/<table>.sql`: one COPY block per table
//! - `sequences.sql`, `large_objects.sql`, `matviews.sql`

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_postgres::{Client, CopyOutStream};

use super::catalog::{
    self, quote_ident, quote_literal, Extension, PlatformUserObject, ServerInfo, Table, COPY_TEXT_SETTINGS,
};
use super::error::{SupabaseError, SupabaseResult};
use super::pgconn::{DbTarget, Route};
use super::pgtools::{self, ChildStream, PgTool, RestrictFilter};
use crate::repo::archiver::{Content, ContentSaver};
use crate::repo::chunker::{line_pieces, MAX_SCALE};
use crate::repo::format::blob::{compressed_size, Dictionary};
use crate::repo::format::config::{PROFILE_LINES, PROFILE_SMALL};
use crate::repo::Id;

pub struct DbOptions {
    pub jobs: usize,
    /// `schema.table` names whose rows are left out.
    pub exclude_tables: Vec<String>,
    /// How each table's stream (by path) was stored in the previous
    /// snapshot: its chunk scale is kept unless its data changed character
    /// (`chunk_scale`), its dictionary while it still helps.
    pub previous_tables: HashMap<String, PreviousTable>,
}

#[derive(Debug, Clone, Default)]
pub struct PreviousTable {
    pub chunk_scale: u8,
    pub dictionary: Option<Id>,
}

/// One captured stream, ready to be added to the snapshot tree.
pub struct DbStream {
    /// Path under the snapshot root, e.g. ["db", "data", "public", "t.sql"].
    pub path: Vec<String>,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableManifest {
    pub schema: String,
    pub name: String,
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Order-independent fingerprint of the rows (see `rowhash`).
    pub rows_hash: String,
    pub columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_of: Option<String>,
    /// Its chunks were 4^k times the line profile's size (`chunk_scale`).
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk_scale: u8,
    /// The zstd dictionary its new chunks were compressed with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<String>,
}

fn is_zero(k: &u8) -> bool {
    *k == 0
}

/// What restore and verify need to know about the captured database.
#[derive(Debug, Clone, Serialize)]
pub struct DbManifest {
    pub server_version: String,
    pub server_version_num: i32,
    pub pg_dump_version: String,
    pub database: String,
    pub connection: String,
    pub user: String,
    /// All streams share one exported snapshot.
    pub consistent: bool,
    pub role_passwords: bool,
    /// Login roles restored without a password (need `ALTER ROLE … PASSWORD`).
    pub login_roles_without_password: Vec<String>,
    pub extensions: Vec<Extension>,
    pub user_schemas: Vec<String>,
    pub platform_schemas: Vec<String>,
    pub tables: Vec<TableManifest>,
    pub excluded_tables: Vec<String>,
    /// Tables the connection may not read: left out, and said so.
    pub unreadable_tables: Vec<String>,
    /// Platform schemas and tables whose definitions could not be read.
    pub unreadable_platform_objects: Vec<String>,
    pub sequences: usize,
    pub large_objects: usize,
    pub materialized_views: Vec<String>,
    pub platform_user_objects: Vec<PlatformUserObject>,
    /// Newest migration of the platform's auth and storage migrators.
    pub platform_versions: serde_json::Value,
    /// Roles, memberships, grants, policies, triggers (for verify).
    pub security: serde_json::Value,
    pub streams: Vec<String>,
}

/// What streaming one table found.
#[derive(Debug, Clone, Default)]
struct TableStats {
    rows: u64,
    bytes: u64,
    hash: String,
    chunk_scale: u8,
    dictionary: Option<Id>,
}

enum Task {
    Roles,
    Schema,
    PlatformSchema,
    Table(Table),
    Sequences,
    LargeObjects,
    MatViews,
}

/// Reports from the capture, for progress display.
pub trait DbObserver: Sync {
    fn stream_started(&self, _name: &str) {}
    fn stream_done(&self, _name: &str, _bytes: u64) {}
    fn warn(&self, _message: &str) {}
}

struct Shared<'a> {
    target: &'a DbTarget,
    saver: &'a ContentSaver,
    pg_dump: PgTool,
    pg_dumpall: PgTool,
    info: ServerInfo,
    snapshot: Option<String>,
    all_platform_schemas: Vec<String>,
    /// Platform schemas whose definitions pg_dump can read.
    platform_schemas: Vec<String>,
    /// Tables in them it cannot lock, left out of the dump.
    closed_tables: Vec<(String, String)>,
    /// Tables in the user's schemas it cannot lock, left out of schema.sql.
    unreadable_user_tables: Vec<(String, String)>,
    matviews: Vec<String>,
    observer: &'a dyn DbObserver,
    previous_tables: &'a HashMap<String, PreviousTable>,
    failed: AtomicBool,
    /// Per table stream path: what streaming it found.
    rows: Mutex<HashMap<String, TableStats>>,
    large_objects: AtomicU64,
    sequences: AtomicU64,
}

pub fn backup_database(
    handle: &Handle,
    target: &DbTarget,
    saver: &ContentSaver,
    opts: &DbOptions,
    observer: &dyn DbObserver,
) -> SupabaseResult<(Vec<DbStream>, DbManifest)> {
    let coordinator = handle.block_on(target.connect())?;
    let info = handle.block_on(catalog::server_info(&coordinator))?;
    let pg_dump = pgtools::find_tool("pg_dump", info.major())?;
    let pg_dumpall = pgtools::find_tool("pg_dumpall", info.major())?;

    handle
        .block_on(coordinator.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        .map_err(SupabaseError::db)?;
    let snapshot = if target.route() == Route::TransactionPooler {
        observer.warn(
            "the transaction pooler (port 6543) cannot share a snapshot between connections: \
             streaming every table through one transaction; the schema dump is taken separately. \
             Use the direct connection or the session pooler (port 5432) for one point in time and --jobs",
        );
        None
    } else {
        match handle.block_on(coordinator.query_one("SELECT pg_export_snapshot()", &[])) {
            Ok(row) => Some(row.get::<_, String>(0)),
            Err(e) => {
                observer.warn(&format!(
                    "cannot export a snapshot ({}); dumping through one transaction instead",
                    super::error::pg_message(&e)
                ));
                handle
                    .block_on(coordinator.batch_execute("ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                    .map_err(SupabaseError::db)?;
                None
            }
        }
    };

    let (user_schemas, platform_schemas) = handle.block_on(catalog::schemas(&coordinator))?;
    let extensions = handle.block_on(catalog::extensions(&coordinator))?;
    let all_tables = handle.block_on(catalog::data_tables(&coordinator))?;
    let matviews = handle.block_on(catalog::materialized_views(&coordinator))?;
    let platform_user_objects = handle.block_on(catalog::platform_user_objects(&coordinator))?;
    let login_roles = handle.block_on(catalog::user_login_roles(&coordinator))?;
    let platform_versions = handle.block_on(catalog::platform_versions(&coordinator))?;
    let security = handle.block_on(catalog::security_catalog(&coordinator))?;
    let (closed_schemas, closed_tables) = handle.block_on(catalog::unreadable_platform_objects(&coordinator))?;
    let platform_dumped: Vec<String> =
        platform_schemas.iter().filter(|s| !closed_schemas.contains(s)).cloned().collect();
    for s in &closed_schemas {
        observer
            .warn(&format!("platform schema {s} is not readable by {}; its definitions are not captured", info.user));
    }

    let mut excluded = Vec::new();
    let mut unreadable = Vec::new();
    let mut unreadable_user = Vec::new();
    let mut tables = Vec::new();
    for t in all_tables {
        if opts.exclude_tables.iter().any(|x| x == &t.display()) {
            excluded.push(t.display());
        } else if !t.readable {
            unreadable.push(t.display());
            if !super::platform::is_platform_schema(&t.schema) {
                unreadable_user.push((t.schema.clone(), t.name.clone()));
            }
        } else {
            tables.push(t);
        }
    }
    for x in &opts.exclude_tables {
        if !excluded.contains(x) {
            return Err(SupabaseError::Config(format!("--exclude-table {x}: no such table with data to back up")));
        }
    }
    for t in &unreadable {
        observer.warn(&format!("table {t} is not readable by {} and is left out", info.user));
    }
    // Hold every table against DROP/ALTER while the streams run, as pg_dump does.
    if !tables.is_empty() {
        let list: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
        handle
            .block_on(coordinator.batch_execute(&format!(
                "SET LOCAL lock_timeout = '60s'; LOCK TABLE {} IN ACCESS SHARE MODE; {SCAN_SETTINGS}; {COPY_TEXT_SETTINGS}",
                list.join(", ")
            )))
            .map_err(SupabaseError::db)?;
    }

    let mut tasks: VecDeque<Task> = VecDeque::new();
    // Largest work first would be ideal; the catalog order is stable and good enough.
    tasks.extend([Task::Roles, Task::Schema, Task::PlatformSchema]);
    tasks.extend(tables.iter().cloned().map(Task::Table));
    tasks.extend([Task::Sequences, Task::LargeObjects, Task::MatViews]);

    let shared = Shared {
        target,
        saver,
        pg_dump: pg_dump.clone(),
        pg_dumpall,
        info: info.clone(),
        snapshot: snapshot.clone(),
        all_platform_schemas: platform_schemas.clone(),
        platform_schemas: platform_dumped,
        closed_tables: closed_tables.clone(),
        unreadable_user_tables: unreadable_user,
        matviews: matviews.iter().map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n))).collect(),
        observer,
        previous_tables: &opts.previous_tables,
        failed: AtomicBool::new(false),
        rows: Mutex::new(HashMap::new()),
        large_objects: AtomicU64::new(0),
        sequences: AtomicU64::new(0),
    };
    let jobs = if snapshot.is_some() { opts.jobs.max(1) } else { 1 };
    let queue = Mutex::new(tasks);
    let results: Mutex<Vec<DbStream>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<SupabaseError>> = Mutex::new(None);
    // Without an exported snapshot the single worker uses the coordinator's
    // transaction, so all table data still comes from one point in time.
    let coordinator = Mutex::new(Some(coordinator));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let conn = match &shared.snapshot {
                    Some(id) => worker_connection(&shared, id),
                    None => {
                        let client = coordinator.lock().unwrap_or_else(|p| p.into_inner()).take().expect("one worker");
                        Ok(Conn { client: Some(client), driver: Driver::Shared(handle) })
                    }
                };
                let run = |conn: &Conn| -> SupabaseResult<()> {
                    loop {
                        if shared.failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let Some(task) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                            return Ok(());
                        };
                        let stream = run_task(&shared, conn, task)?;
                        results.lock().unwrap_or_else(|p| p.into_inner()).push(stream);
                    }
                };
                if let Err(e) = conn.and_then(|c| run(&c)) {
                    shared.failed.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // The coordinator's transaction (and its locks) ends here.
    drop(coordinator);

    let mut streams = results.into_inner().unwrap_or_else(|p| p.into_inner());
    streams.sort_by(|a, b| a.path.cmp(&b.path));
    let rows = shared.rows.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut table_manifests: Vec<TableManifest> = tables
        .iter()
        .map(|t| {
            let path = table_path(t).join("/");
            let stats = rows.get(&path).cloned().unwrap_or_default();
            TableManifest {
                schema: t.schema.clone(),
                name: t.name.clone(),
                path,
                rows: stats.rows,
                bytes: stats.bytes,
                rows_hash: stats.hash,
                columns: t.columns.clone(),
                partition_of: t.partition_of.clone(),
                chunk_scale: stats.chunk_scale,
                dictionary: stats.dictionary.map(|d| d.to_hex()),
            }
        })
        .collect();
    table_manifests.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    let manifest = DbManifest {
        server_version: info.version.clone(),
        server_version_num: info.version_num,
        pg_dump_version: pg_dump.version.clone(),
        database: info.database.clone(),
        connection: target.display(),
        user: info.user.clone(),
        consistent: snapshot.is_some(),
        role_passwords: info.can_read_passwords,
        login_roles_without_password: if info.can_read_passwords { Vec::new() } else { login_roles },
        extensions,
        user_schemas,
        platform_schemas,
        tables: table_manifests,
        excluded_tables: excluded,
        unreadable_tables: unreadable,
        unreadable_platform_objects: closed_schemas
            .iter()
            .cloned()
            .chain(closed_tables.iter().map(|(s, n)| format!("{s}.{n}")))
            .collect(),
        sequences: shared.sequences.load(Ordering::Relaxed) as usize,
        large_objects: shared.large_objects.load(Ordering::Relaxed) as usize,
        materialized_views: matviews.iter().map(|(s, n)| format!("{s}.{n}")).collect(),
        platform_user_objects,
        platform_versions,
        security,
        streams: streams.iter().map(|s| s.path.join("/")).collect(),
    };
    Ok((streams, manifest))
}

/// A connection that streams tables, with what drives its I/O.
///
/// A worker's own connection runs on a current-thread runtime that only
/// that worker's thread drives: COPY messages are then parsed on the thread
/// that consumes them, instead of being handed between threads with a
/// wake-up per read (about a tenth of all CPU samples of a backup on two
/// cores went to those wake-ups).
struct Conn<'a> {
    client: Option<Client>,
    driver: Driver<'a>,
}

enum Driver<'a> {
    /// The coordinator's connection, driven by the shared runtime.
    Shared(&'a Handle),
    Own {
        runtime: tokio::runtime::Runtime,
        connection: Option<tokio::task::JoinHandle<()>>,
    },
}

impl Conn<'_> {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.driver {
            Driver::Shared(handle) => handle.block_on(f),
            Driver::Own { runtime, .. } => runtime.block_on(f),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("connection open")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        // Closing the client lets its connection say goodbye to the server
        // (no "unexpected EOF" in the server's log); only this thread can
        // drive an own runtime's connection to that end.
        drop(self.client.take());
        if let Driver::Own { runtime, connection } = &mut self.driver {
            if let Some(c) = connection.take() {
                let _ = runtime.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), c).await });
            }
        }
    }
}

fn worker_connection<'a>(shared: &Shared, snapshot: &str) -> SupabaseResult<Conn<'a>> {
    let runtime = super::current_thread_runtime()?;
    let (client, connection) = runtime.block_on(shared.target.connect_with_driver())?;
    let conn = Conn { client: Some(client), driver: Driver::Own { runtime, connection: Some(connection) } };
    conn.block_on(conn.client().batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {SCAN_SETTINGS}; {COPY_TEXT_SETTINGS}",
        quote_literal(snapshot)
    )))
        .map_err(|e| {
            SupabaseError::Database(format!(
                "cannot share the backup's snapshot with another connection ({}); \
                 a transaction pooler does this: use the direct connection or the session pooler",
                super::error::pg_message(&e)
            ))
        })?;
    Ok(conn)
}

/// Tables are read in their physical order, as pg_dump reads them: an
/// `ORDER BY` primary key made the server sort or walk the index (4 of
/// 11.6 s on a 20M-row table) and, for random keys such as UUIDs, would
/// turn a sequential read into random ones. Rows in physical order still
/// deduplicate day after day (an update changes the chunk a row leaves and
/// the one it lands in, which for in-page updates is the same chunk;
/// measured on pgbench traffic: day 2 adds 3% more than in key order).
/// A synchronized scan would start where another session's scan of the
/// same table happens to be, and so shift every row of the stream.
const SCAN_SETTINGS: &str = "SET LOCAL synchronize_seqscans = off";

/// Path components of a table's stream. Names are escaped so that any
/// table name (even "..", or one with a slash) is one safe file name.
pub fn table_path(t: &Table) -> Vec<String> {
    vec!["db".into(), "data".into(), escape_component(&t.schema), format!("{}.sql", escape_component(&t.name))]
}

pub fn escape_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        match c {
            '/' | '%' | '\0' => out.push_str(&format!("%{:02X}", c as u32)),
            '.' if i == 0 => out.push_str("%2E"),
            c => out.push(c),
        }
    }
    out
}

fn run_task(shared: &Shared, conn: &Conn, task: Task) -> SupabaseResult<DbStream> {
    let (path, content) = match task {
        Task::Roles => {
            let mut cmd = pgtools::command(&shared.pg_dumpall, shared.target);
            cmd.args(["--roles-only", "--quote-all-identifiers", "--no-comments", "-l", &shared.info.database]);
            if !shared.info.can_read_passwords {
                cmd.arg("--no-role-passwords");
            }
            (vec!["db", "roles.sql"], save_child(shared, cmd, "pg_dumpall --roles-only")?)
        }
        Task::Schema => {
            let mut cmd = pgtools::command(&shared.pg_dump, shared.target);
            cmd.args(["--schema-only", "--quote-all-identifiers"]);
            if let Some(s) = &shared.snapshot {
                cmd.arg(format!("--snapshot={s}"));
            }
            for p in &shared.all_platform_schemas {
                cmd.arg(format!("--exclude-schema={}", quote_ident(p)));
            }
            // pg_dump locks every table it describes; these it may not.
            for (s, n) in &shared.unreadable_user_tables {
                cmd.arg(format!("--exclude-table={}.{}", quote_ident(s), quote_ident(n)));
            }
            (vec!["db", "schema.sql"], save_child(shared, cmd, "pg_dump --schema-only")?)
        }
        Task::PlatformSchema => {
            let mut cmd = platform_schema_command(
                &shared.pg_dump,
                shared.target,
                &shared.platform_schemas,
                &shared.closed_tables,
            );
            if let Some(s) = &shared.snapshot {
                cmd.arg(format!("--snapshot={s}"));
            }
            if shared.platform_schemas.is_empty() {
                (vec!["db", "platform_schema.sql"], save_bytes(shared, "platform_schema.sql", Vec::new())?)
            } else {
                (vec!["db", "platform_schema.sql"], save_child(shared, cmd, "pg_dump of the platform schemas")?)
            }
        }
        Task::Table(t) => {
            let path = table_path(&t);
            let label = t.display();
            shared.observer.stream_started(&label);
            let content = copy_table(shared, conn, &t)?;
            return Ok(DbStream { path, content });
        }
        Task::Sequences => {
            let seqs = conn.block_on(catalog::sequence_values(conn.client()))?;
            shared.sequences.store(seqs.len() as u64, Ordering::Relaxed);
            let mut sql = String::new();
            for (s, n, v, called) in seqs {
                let name = quote_literal(&format!("{}.{}", quote_ident(&s), quote_ident(&n)));
                sql.push_str(&format!("SELECT pg_catalog.setval({name}, {v}, {called});\n"));
            }
            (vec!["db", "sequences.sql"], save_bytes(shared, "sequences.sql", sql.into_bytes())?)
        }
        Task::LargeObjects => (vec!["db", "large_objects.sql"], large_objects(shared, conn)?),
        Task::MatViews => {
            let sql: String = shared.matviews.iter().map(|m| format!("REFRESH MATERIALIZED VIEW {m};\n")).collect();
            (vec!["db", "matviews.sql"], save_bytes(shared, "matviews.sql", sql.into_bytes())?)
        }
    };
    Ok(DbStream { path: path.into_iter().map(String::from).collect(), content })
}

/// pg_dump of the platform schemas' definitions, leaving out the tables
/// the connection cannot lock (pg_dump locks every table it describes).
pub fn platform_schema_command(
    tool: &PgTool,
    target: &DbTarget,
    schemas: &[String],
    closed_tables: &[(String, String)],
) -> std::process::Command {
    let mut cmd = pgtools::command(tool, target);
    cmd.args(["--schema-only", "--quote-all-identifiers"]);
    for p in schemas {
        cmd.arg(format!("--schema={}", quote_ident(p)));
    }
    for (s, n) in closed_tables {
        cmd.arg(format!("--exclude-table={}.{}", quote_ident(s), quote_ident(n)));
    }
    cmd
}

fn save_bytes(shared: &Shared, label: &str, bytes: Vec<u8>) -> SupabaseResult<Content> {
    let c = shared.saver.save(&bytes[..], "default", label, false)?;
    shared.observer.stream_done(label, c.size);
    Ok(c)
}

fn save_child(shared: &Shared, cmd: std::process::Command, label: &str) -> SupabaseResult<Content> {
    shared.observer.stream_started(label);
    let (mut child, stdout) = ChildStream::spawn(cmd, label)?;
    let saved = shared.saver.save(RestrictFilter::new(stdout), "default", label, false);
    if saved.is_err() {
        child.kill();
    }
    let finished = child.finish();
    let content = saved?;
    finished?;
    shared.observer.stream_done(label, content.size);
    Ok(content)
}

fn copy_table(shared: &Shared, conn: &Conn, t: &Table) -> SupabaseResult<Content> {
    let cols: Vec<String> = t.columns.iter().map(|c| quote_ident(c)).collect();
    let select = format!(
        "SELECT {} FROM ONLY {}{}",
        if cols.is_empty() { "*".to_string() } else { cols.join(", ") },
        t.qualified(),
        t.filter.as_ref().map(|f| format!(" {f}")).unwrap_or_default(),
    );
    let stream = conn
        .block_on(conn.client().copy_out(&format!("COPY ({select}) TO STDOUT")))
        .map_err(|e| SupabaseError::Database(format!("reading {}: {}", t.display(), super::error::pg_message(&e))))?;
    let header = format!("COPY {} ({}) FROM stdin;\n", t.qualified(), cols.join(", "));
    let mut reader = CopyReader {
        conn,
        stream: Box::pin(stream),
        pending: Bytes::from(header.into_bytes()),
        state: CopyState::Header,
        hash: super::rowhash::RowHash::new(),
        error: None,
    };
    let label = t.display();
    let path = table_path(t).join("/");
    let profile = shared.saver.first_profile(&[PROFILE_LINES, PROFILE_SMALL]);
    let previous = shared.previous_tables.get(&path);
    let mut sample = Vec::with_capacity(DICTIONARY_SAMPLE);
    let sampled = (&mut reader).take(DICTIONARY_SAMPLE as u64).read_to_end(&mut sample);
    let scale = chunk_scale(&sample[..sample.len().min(SCALE_SAMPLE)], previous.map(|p| p.chunk_scale));
    let dictionary = match &sampled {
        Ok(_) => table_dictionary(shared.saver, t, &sample, scale, previous.and_then(|p| p.dictionary.as_ref())),
        Err(_) => Ok(None),
    };
    let content = match (sampled, dictionary) {
        (Ok(_), Ok(dictionary)) => {
            let rest = std::io::Cursor::new(sample).chain(&mut reader);
            let id = dictionary.as_ref().map(|d| d.id);
            shared.saver.save_compressed_with(rest, profile, scale, dictionary, &label).map(|c| (c, id))
        }
        (Err(e), _) => Err(crate::repo::Error::io(&label, e)),
        (_, Err(e)) => Err(e),
    };
    if let Some(e) = reader.error.take() {
        return Err(SupabaseError::Database(format!("reading {label}: {}", super::error::one_line(&e))));
    }
    let (content, dictionary) = content?;
    let stats = TableStats {
        rows: reader.hash.rows,
        bytes: content.size,
        hash: reader.hash.finish(),
        chunk_scale: scale,
        dictionary,
    };
    shared.rows.lock().unwrap_or_else(|p| p.into_inner()).insert(path, stats);
    shared.observer.stream_done(&label, content.size);
    Ok(content)
}

/// Bytes at the start of a table's stream that judge its chunk scale.
const SCALE_SAMPLE: usize = 256 * 1024;

/// Bytes at the start of a table's stream read before any is stored: the
/// first `SCALE_SAMPLE` judge the chunk scale, the first three quarters
/// train a dictionary and the last quarter tries it out.
const DICTIONARY_SAMPLE: usize = 1 << 20;
/// Tables with a smaller heap get no dictionary: one costs up to
/// `DICTIONARY_SIZE` (stored once, kept for the repository's life) and
/// saves a fifth or less of what the table's chunks store.
const DICTIONARY_FROM: u64 = 4 << 20;
const DICTIONARY_SIZE: usize = 64 << 10;
/// Average chunk of the `lines` profile at scale 0 (docs/FORMAT.md §7).
const LINE_CHUNK: usize = 6 << 10;
/// Chunks this large hold enough context of their own: pgbench's
/// accounts in 384 KiB chunks come out 2% smaller with a dictionary.
const DICTIONARY_CHUNKS_UP_TO: usize = 24 << 10;
/// A new dictionary must shrink the tried-out chunks by this fraction...
const NEW_DICTIONARY_GAIN: f64 = 0.05;
/// ... and the previous snapshot's is kept while it shrinks them by this
/// much, so that a table's new chunks keep one dictionary.
const KEPT_DICTIONARY_GAIN: f64 = 0.02;

/// The zstd dictionary a table's new chunks are compressed with, if one
/// pays. Rows of text cut in 6 KiB chunks and compressed one by one lose
/// the context a whole dump has: the bench's documents table stores 45.3
/// MB that way against 34.9 MB as one zstd stream, and 37.3 MB with a
/// 64 KiB dictionary trained on the table's first 768 KiB (simulated on
/// the table's COPY; training takes 25-70 ms). The dictionary of the
/// previous snapshot of the table is kept while it still helps.
fn table_dictionary(
    saver: &ContentSaver,
    t: &Table,
    sample: &[u8],
    scale: u8,
    previous: Option<&Id>,
) -> crate::repo::Result<Option<std::sync::Arc<Dictionary>>> {
    let chunk = LINE_CHUNK << (2 * u32::from(scale));
    if sample.len() < DICTIONARY_SAMPLE || t.estimated_bytes < DICTIONARY_FROM || chunk > DICTIONARY_CHUNKS_UP_TO {
        return Ok(None);
    }
    let (training, held_out) = sample.split_at(sample.len() / 4 * 3);
    let trial = line_pieces(held_out, chunk);
    let level = saver.compression_level();
    let plain = compressed_size(&trial, level, None).max(1) as f64;
    let gain = |d: &Dictionary| 1.0 - compressed_size(&trial, level, Some(d)) as f64 / plain;
    if let Some(kept) = previous.and_then(|id| saver.stored_dictionary(id)) {
        if gain(&kept) >= KEPT_DICTIONARY_GAIN {
            return Ok(Some(kept));
        }
    }
    let pieces = line_pieces(training, chunk);
    let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
    let Ok(bytes) = zstd::dict::from_continuous(training, &sizes, DICTIONARY_SIZE) else { return Ok(None) };
    match saver.prepare_dictionary(&bytes) {
        Some(d) if gain(&d) >= NEW_DICTIONARY_GAIN => saver.store_dictionary(bytes, d).map(Some),
        _ => Ok(None),
    }
}

/// How much larger than the line profile's a table's chunks are cut:
/// 4^k times. Chunks of 6 KiB that compress 50-fold store less data than
/// the ~160 bytes each blob costs besides it, so `k` grows with how well
/// the start of the stream compresses (zstd level 3, whatever the
/// repository's level, so that the choice depends on the data alone): the
/// ratio `r` gives `x = log4(r / 4)` and `k = ceil(x)` within 0..=3, so a
/// chunk compresses to about 1.5 KiB or more. Text-like rows (ratio ~3)
/// keep 6 KiB chunks; pgbench's accounts (ratio 81) get 384 KiB ones,
/// which on a day of pgbench traffic store 4.0x less on day 1 and 2.2x
/// less on day 2 (scripts/bench-peers, table simulation in the issue
/// note). A changed scale re-stores the whole table, so the previous
/// snapshot's `k` is kept while `x` stays within half a step of its band.
fn chunk_scale(sample: &[u8], previous: Option<u8>) -> u8 {
    let compressed = zstd::bulk::compress(sample, 3).map_or(sample.len(), |c| c.len()).max(1);
    scale_for_ratio(sample.len() as f64 / compressed as f64, previous)
}

fn scale_for_ratio(ratio: f64, previous: Option<u8>) -> u8 {
    let x = (ratio / 4.0).log2() / 2.0;
    let max = f64::from(MAX_SCALE);
    match previous {
        Some(k) if k <= MAX_SCALE && x > f64::from(k) - 1.5 && x <= f64::from(k) + 0.5 => k,
        _ => x.ceil().clamp(0.0, max) as u8,
    }
}

#[derive(PartialEq)]
enum CopyState {
    Header,
    Rows,
    Trailer,
    Done,
}

/// Bytes of COPY data gathered per wake-up of the reading thread.
const COPY_BATCH: usize = 256 * 1024;

/// COPY output as one `COPY … FROM stdin;` block: header, rows, `\.`.
struct CopyReader<'a> {
    conn: &'a Conn<'a>,
    stream: Pin<Box<CopyOutStream>>,
    pending: Bytes,
    state: CopyState,
    hash: super::rowhash::RowHash,
    error: Option<String>,
}

impl Read for CopyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                let _ = self.pending.split_to(n);
                return Ok(n);
            }
            match self.state {
                CopyState::Header => self.state = CopyState::Rows,
                CopyState::Rows => {
                    // Postgres sends one message per row: gather many per
                    // wake-up so the per-message cost stays off the hot path.
                    let stream = &mut self.stream;
                    let (batch, end) = self.conn.block_on(async {
                        let mut batch = Vec::with_capacity(COPY_BATCH + 4096);
                        while batch.len() < COPY_BATCH {
                            match stream.next().await {
                                Some(Ok(bytes)) => batch.extend_from_slice(&bytes),
                                Some(Err(e)) => return (batch, Some(Err(e))),
                                None => return (batch, Some(Ok(()))),
                            }
                        }
                        (batch, None)
                    });
                    // Counts the rows too (text COPY has one '\n' per row).
                    self.hash.update(&batch);
                    self.pending = Bytes::from(batch);
                    match end {
                        Some(Err(e)) => {
                            self.error = Some(super::error::pg_message(&e));
                            return Err(std::io::Error::other("COPY failed"));
                        }
                        Some(Ok(())) => self.state = CopyState::Trailer,
                        None => {}
                    }
                }
                CopyState::Trailer => {
                    self.pending = Bytes::from_static(b"\\.\n");
                    self.state = CopyState::Done;
                }
                CopyState::Done => return Ok(0),
            }
        }
    }
}

/// Large objects as SQL: create with owner, contents in 1 MiB pieces,
/// privileges. A per-table dump would silently leave them out.
fn large_objects(shared: &Shared, conn: &Conn) -> SupabaseResult<Content> {
    let los = conn.block_on(catalog::large_objects(conn.client()))?;
    shared.large_objects.store(los.len() as u64, Ordering::Relaxed);
    let reader = LargeObjectReader { conn, los: los.into(), current: None, pending: Vec::new(), pos: 0, error: None };
    let mut reader = reader;
    let content = shared.saver.save(&mut reader, "default", "large objects", false);
    if let Some(e) = reader.error.take() {
        return Err(e);
    }
    let content = content?;
    shared.observer.stream_done("large objects", content.size);
    Ok(content)
}

const LO_PIECE: i64 = 1 << 20;

struct LargeObjectReader<'a> {
    conn: &'a Conn<'a>,
    los: VecDeque<(i64, String)>,
    /// The object being read and the offset reached.
    current: Option<(i64, i64)>,
    pending: Vec<u8>,
    pos: usize,
    error: Option<SupabaseError>,
}

impl LargeObjectReader<'_> {
    fn refill(&mut self) -> SupabaseResult<bool> {
        self.pending.clear();
        self.pos = 0;
        let q = |sql: &str, oid: i64| {
            self.conn.block_on(self.conn.client().query_one(sql, &[&oid])).map_err(SupabaseError::db)
        };
        if let Some((oid, offset)) = self.current {
            let row = self
                .conn
                .block_on(
                    self.conn
                        .client()
                        .query_one("SELECT lo_get($1::int8::oid, $2, $3::int4)", &[&oid, &offset, &(LO_PIECE as i32)]),
                )
                .map_err(SupabaseError::db)?;
            let piece: Vec<u8> = row.get(0);
            if piece.is_empty() {
                self.current = None;
                // Privileges last: a restricted object is still writable while loading.
                let acl = q(
                    "SELECT coalesce(string_agg(format('GRANT %s ON LARGE OBJECT %s TO %s;', a.privilege_type, $1::int8,
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END), E'\\n'), '')
                     FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a WHERE m.oid = $1::int8::oid",
                    oid,
                )?;
                let acl: String = acl.get(0);
                if !acl.is_empty() {
                    self.pending.extend_from_slice(acl.as_bytes());
                    self.pending.push(b'\n');
                }
                return Ok(true);
            }
            self.pending.extend_from_slice(format!("SELECT pg_catalog.lo_put({oid}, {offset}, '\\x").as_bytes());
            self.pending.extend_from_slice(hex::encode(&piece).as_bytes());
            self.pending.extend_from_slice(b"');\n");
            self.current = Some((oid, offset + piece.len() as i64));
            return Ok(true);
        }
        let Some((oid, owner)) = self.los.pop_front() else { return Ok(false) };
        self.pending.extend_from_slice(
            format!(
                "SELECT pg_catalog.lo_create({oid});\nALTER LARGE OBJECT {oid} OWNER TO {};\n",
                quote_ident(&owner)
            )
            .as_bytes(),
        );
        self.current = Some((oid, 0));
        Ok(true)
    }
}

impl Read for LargeObjectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.pending.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    self.error = Some(e);
                    return Err(std::io::Error::other("reading large objects failed"));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgbench_accounts-like rows: padded with blanks, balances `random`ly
    /// non-zero.
    fn padded_rows(n: usize, random: bool) -> Vec<u8> {
        let mut x = 99u64;
        let mut out = Vec::new();
        for i in 1..=n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let balance = if random { (x % 10_000) as i64 - 5000 } else { 0 };
            out.extend_from_slice(format!("{i}\t{}\t{balance}\t{}\n", 1 + i / 100_000, " ".repeat(84)).as_bytes());
        }
        out
    }

    /// Made-up words of random letters: compresses about 2-fold, as text
    /// columns do.
    fn text_rows(n: usize) -> Vec<u8> {
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = Vec::new();
        for i in 0..n {
            out.extend_from_slice(format!("{i}\tDocument {i}\t").as_bytes());
            for _ in 0..60 {
                let len = 2 + next() % 7;
                out.extend((0..len).map(|_| b'a' + (next() % 26) as u8));
                out.push(b' ');
            }
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn chunks_grow_with_how_well_the_table_compresses() {
        let text = text_rows(2000);
        assert_eq!(chunk_scale(&text[..SCALE_SAMPLE.min(text.len())], None), 0);
        assert_eq!(chunk_scale(&padded_rows(3000, false), None), MAX_SCALE);
        assert_eq!(chunk_scale(b"", None), 0);
        // Each band: ratios up to 4, 16, 64, then more.
        let fresh: Vec<u8> =
            [3.0, 4.0, 5.0, 16.0, 17.0, 64.0, 65.0, 1000.0].iter().map(|&r| scale_for_ratio(r, None)).collect();
        assert_eq!(fresh, [0, 0, 1, 1, 2, 2, 3, 3]);
    }

    /// A table whose ratio drifts across a band's edge keeps its scale
    /// (re-cutting it would store it all again) until the drift is large.
    #[test]
    fn the_previous_scale_is_kept_near_its_band() {
        assert_eq!(scale_for_ratio(58.0, None), 2);
        assert_eq!(scale_for_ratio(58.0, Some(3)), 3);
        assert_eq!(scale_for_ratio(33.0, Some(3)), 3);
        assert_eq!(scale_for_ratio(31.0, Some(3)), 2);
        assert_eq!(scale_for_ratio(7.9, Some(0)), 0);
        assert_eq!(scale_for_ratio(8.1, Some(0)), 1);
        assert_eq!(scale_for_ratio(3.0, Some(1)), 1);
        assert_eq!(scale_for_ratio(1.9, Some(1)), 0);
        assert_eq!(scale_for_ratio(500.0, Some(3)), 3);
        assert_eq!(scale_for_ratio(500.0, Some(9)), 3);
    }

    fn table(estimated_bytes: u64) -> Table {
        Table {
            schema: "public".into(),
            name: "documents".into(),
            columns: vec![],
            filter: None,
            partition_of: None,
            readable: true,
            estimated_bytes,
        }
    }

    /// Large tables of text get a dictionary, which the next backup keeps;
    /// small tables, large chunks and data it does not shrink get none.
    #[test]
    fn large_text_tables_get_a_dictionary_that_later_backups_keep() {
        use crate::repo::format::blob::BlobType;
        use crate::repo::test_support::{memory_repo, store_file_with, vocabulary_rows};
        let repo = memory_repo();
        let rows = vocabulary_rows(0, 6000);
        let sample = &rows[..DICTIONARY_SAMPLE];
        let mut noise = vec![0u8; DICTIONARY_SAMPLE];
        getrandom::getrandom(&mut noise).unwrap();
        let mut chosen = None;
        store_file_with(&repo, |w| {
            let saver = w.content_saver();
            assert!(table_dictionary(&saver, &table(1 << 20), sample, 0, None).unwrap().is_none());
            assert!(table_dictionary(&saver, &table(64 << 20), sample, 2, None).unwrap().is_none());
            assert!(table_dictionary(&saver, &table(64 << 20), &noise, 0, None).unwrap().is_none());
            assert!(table_dictionary(&saver, &table(64 << 20), &sample[..SCALE_SAMPLE], 0, None).unwrap().is_none());
            let d = table_dictionary(&saver, &table(64 << 20), sample, 0, None).unwrap().expect("a dictionary");
            chosen = Some(d.id);
            saver.save_compressed_with(&rows[..], PROFILE_LINES, 0, Some(d), "documents").unwrap()
        });
        let id = chosen.unwrap();
        assert_eq!(repo.index().get(&id).unwrap().blob_type, BlobType::Dictionary);
        let later = vocabulary_rows(100_000, 6000);
        store_file_with(&repo, |w| {
            let saver = w.content_saver();
            let kept = table_dictionary(&saver, &table(64 << 20), &later[..DICTIONARY_SAMPLE], 0, Some(&id));
            assert_eq!(kept.unwrap().unwrap().id, id);
            // A previous dictionary the repository does not have: a new one.
            let unknown = Id([7; 32]);
            let fresh = table_dictionary(&saver, &table(64 << 20), &later[..DICTIONARY_SAMPLE], 0, Some(&unknown));
            assert_ne!(fresh.unwrap().unwrap().id, unknown);
            saver.save_compressed_with(&later[..], PROFILE_LINES, 0, None, "documents").unwrap()
        });
    }
}
