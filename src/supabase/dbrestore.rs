//! Restoring the database part of a project snapshot into a live project,
//! in one transaction: it all happens, or nothing does.
//!
//! Order (each step's statements filtered by `restore_rules`):
//! 1. roles (idempotent; platform roles untouched)
//! 2. the target's user schemas are dropped (CASCADE), `public` recreated
//! 3. extensions the snapshot used, then schema.sql's definitions (pre-data)
//! 4. the user's objects in platform schemas: what the snapshot's platform
//!    DDL has and the target's lacks, columns added to platform tables
//! 5. rows: platform data tables truncated, every stream COPYed with its
//!    column list, triggers and foreign keys held back by
//!    `session_replication_role = replica` (or, where that is refused,
//!    loaded before any user trigger or constraint exists, in foreign-key
//!    order); large objects; sequence values
//! 6. schema.sql's indexes, constraints, triggers and policies (post-data),
//!    which also check the loaded rows; the platform objects that depend on
//!    them; materialised views refreshed
//!
//! Roles are transactional in Postgres, so step 1 rolls back with the rest.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;

use std::pin::Pin;

use futures_util::SinkExt;
use serde_json::Value;
use tokio::runtime::Handle;
use tokio_postgres::Client;
use tokio_postgres::CopyInSink;

use super::catalog::quote_ident;
use super::error::{pg_message, SupabaseError, SupabaseResult};
use super::pgconn::DbTarget;
use super::pgtools::{self, ChildStream, RestrictFilter};
use super::platform;
use super::restore_rules::{judge, Context, Stream, Verdict};
use super::sql::{normalize_head, section, split_statements, Section};

/// Where the snapshot's streams come from (the engine, in practice).
pub trait StreamSource: Sync {
    fn read_text(&self, path: &str) -> SupabaseResult<String>;
    /// Write a stream's bytes to `out`.
    fn copy_to(&self, path: &str, out: &mut dyn Write) -> SupabaseResult<u64>;
}

#[derive(Default)]
pub struct DbRestoreOptions {
    /// Only these tables' rows (`schema.table`), replaced in place.
    pub tables: Vec<String>,
    /// Only the tables of these schemas.
    pub schemas: Vec<String>,
    pub exclude_tables: Vec<String>,
    /// Unschedule the snapshot's pg_cron jobs in the restored project.
    pub disable_cron: bool,
}

/// One statement the restore will run, and why it is there.
#[derive(Debug, Clone)]
pub struct Step {
    pub phase: &'static str,
    pub sql: String,
}

#[derive(Debug, Default)]
pub struct DbRestoreReport {
    pub statements: usize,
    pub tables: usize,
    pub rows: u64,
    /// Statements not run, with the rule that said so (shown to the user).
    pub skipped: Vec<(String, String)>,
    pub notices: Vec<String>,
    pub replica_mode: bool,
}

/// The database manifest of a snapshot (`extra.database`).
pub struct DbSnapshot<'a> {
    pub manifest: &'a Value,
}

impl DbSnapshot<'_> {
    fn tables(&self) -> Vec<(String, String, String, u64)> {
        self.manifest["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                Some((
                    t["schema"].as_str()?.to_string(),
                    t["name"].as_str()?.to_string(),
                    t["path"].as_str()?.to_string(),
                    t["rows"].as_u64().unwrap_or(0),
                ))
            })
            .collect()
    }
    fn strings(&self, key: &str) -> Vec<String> {
        self.manifest[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
    }
}

/// A statement as shown in messages: one line, shortened, and never with
/// a role's password (hash) in it.
pub fn shown(sql: &str, max: usize) -> String {
    static PW: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = PW.get_or_init(|| regex::Regex::new(r"(?i)PASSWORD\s+'(?:[^']|'')*'").expect("valid pattern"));
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    re.replace_all(&one, "PASSWORD '[REDACTED]'").chars().take(max).collect()
}

fn exec_err(phase: &str, sql: &str, e: &tokio_postgres::Error) -> SupabaseError {
    let head = shown(sql, 160);
    SupabaseError::Database(format!("{phase}: {} (statement: {head}); nothing was changed", pg_message(e)))
}

/// Statements of a dump, filtered and rewritten by the rules.
fn cleaned(stream: Stream, text: &str, cx: &Context, report: &mut DbRestoreReport) -> Vec<String> {
    let mut out = Vec::new();
    for stmt in split_statements(text) {
        match judge(stream, &stmt, cx) {
            Verdict::Keep => out.push(stmt),
            Verdict::Rewrite(s) => out.push(s),
            Verdict::Skip { rule, notice } => {
                if notice {
                    report.skipped.push((shown(&stmt, 120), rule.to_string()));
                }
            }
        }
    }
    out
}

/// `CREATE TABLE "s"."t" (` → ("s", "t").
fn created_table(stmt: &str) -> Option<(String, String)> {
    let head = normalize_head(stmt, 300);
    let rest = head.strip_prefix("CREATE TABLE ").or_else(|| head.strip_prefix("CREATE UNLOGGED TABLE "))?;
    let name = rest.split(" (").next()?.trim();
    let (s, t) = split_qualified(name)?;
    Some((s, t))
}

fn split_qualified(name: &str) -> Option<(String, String)> {
    // "schema"."table" with doubled quotes inside names.
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            if in_q && chars.get(i + 1) == Some(&'"') {
                cur.push('"');
                i += 2;
                continue;
            }
            in_q = !in_q;
        } else if c == '.' && !in_q {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
        i += 1;
    }
    parts.push(cur);
    (parts.len() == 2).then(|| (parts[0].clone(), parts[1].clone()))
}

/// Column definitions of a `CREATE TABLE` statement: (name, definition).
fn table_columns(stmt: &str) -> Vec<(String, String)> {
    let Some(open) = stmt.find('(') else { return Vec::new() };
    let body = &stmt[open + 1..];
    let mut depth = 0i32;
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    for c in body.chars() {
        match c {
            '\'' => in_q = !in_q,
            '(' if !in_q => depth += 1,
            ')' if !in_q => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            ',' if !in_q && depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| p.starts_with('"'))
        .filter_map(|p| {
            let end = p[1..].find('"')? + 1;
            Some((p[1..end].to_string(), p))
        })
        .collect()
}

/// Statements of the snapshot's platform DDL to run in the target: what
/// the target's own DDL lacks (a column added to a platform table becomes
/// `ADD COLUMN IF NOT EXISTS`), plus everything that refers to the user's
/// schemas, which dropping those schemas removes by cascade. Creation is
/// made idempotent so that objects the target already has are kept.
fn platform_additions(snapshot: &[String], target: &[String], user_schemas: &[String]) -> Vec<String> {
    let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let target_set: HashSet<String> = target.iter().map(|s| fold(s)).collect();
    let target_tables: HashMap<(String, String), Vec<(String, String)>> =
        target.iter().filter_map(|s| Some((created_table(s)?, table_columns(s)))).collect();
    let mentions_user = |s: &str| user_schemas.iter().any(|u| s.contains(&format!("{}.", quote_ident(u))));
    let mut out = Vec::new();
    for stmt in snapshot {
        if let Some(name) = created_table(stmt) {
            if let Some(have) = target_tables.get(&name) {
                let have: HashSet<&str> = have.iter().map(|(n, _)| n.as_str()).collect();
                for (col, def) in table_columns(stmt) {
                    if !have.contains(col.as_str()) {
                        out.push(format!(
                            "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {def}",
                            quote_ident(&name.0),
                            quote_ident(&name.1)
                        ));
                    }
                }
                continue;
            }
        }
        if target_set.contains(&fold(stmt)) && !mentions_user(stmt) {
            continue;
        }
        out.push(idempotent(stmt));
    }
    out
}

/// Creation that tolerates an object already there.
fn idempotent(stmt: &str) -> String {
    let head = normalize_head(stmt, 60);
    let replace_prefix = |from: &str, to: &str| -> String {
        let n = from.split_whitespace().count();
        let rest: String = {
            let mut it = stmt.trim_start();
            for _ in 0..n {
                it = it.trim_start();
                let cut = it.find(char::is_whitespace).unwrap_or(it.len());
                it = &it[cut..];
            }
            it.to_string()
        };
        format!("{to}{rest}")
    };
    const CREATE_FORMS: &[(&str, &str)] = &[
        ("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"),
        ("CREATE UNIQUE INDEX", "CREATE UNIQUE INDEX IF NOT EXISTS"),
        ("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER"),
        ("CREATE VIEW", "CREATE OR REPLACE VIEW"),
        ("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
        ("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"),
        ("CREATE SEQUENCE", "CREATE SEQUENCE IF NOT EXISTS"),
    ];
    if let Some((from, to)) = CREATE_FORMS.iter().find(|(from, _)| head.starts_with(&format!("{from} "))) {
        replace_prefix(from, to)
    } else if head.starts_with("CREATE POLICY ") {
        // DROP POLICY IF EXISTS "name" ON table; then create.
        let norm = normalize_head(stmt, 400);
        match (norm.find("CREATE POLICY "), norm.find(" ON ")) {
            (Some(_), Some(on)) => {
                let name = &norm["CREATE POLICY ".len()..on];
                let table = norm[on + 4..].split_whitespace().next().unwrap_or_default();
                format!("DROP POLICY IF EXISTS {name} ON {table}; {stmt}")
            }
            _ => stmt.to_string(),
        }
    } else {
        stmt.to_string()
    }
}

/// The target's platform schemas' DDL, by pg_dump on the target (the
/// schemas the snapshot has that the target has and lets us read).
fn target_platform_ddl(
    handle: &Handle,
    target: &DbTarget,
    server_major: u32,
    wanted: &[String],
) -> SupabaseResult<String> {
    let c = handle.block_on(target.connect())?;
    let (_, present) = handle.block_on(super::catalog::schemas(&c))?;
    let (closed, closed_tables) = handle.block_on(super::catalog::unreadable_platform_objects(&c))?;
    let schemas: Vec<String> = wanted.iter().filter(|s| present.contains(s) && !closed.contains(s)).cloned().collect();
    if schemas.is_empty() {
        return Ok(String::new());
    }
    let tool = pgtools::find_tool("pg_dump", server_major)?;
    let cmd = super::dbdump::platform_schema_command(&tool, target, &schemas, &closed_tables);
    let (child, stdout) = ChildStream::spawn(cmd, "pg_dump of the target's platform schemas")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut RestrictFilter::new(stdout), &mut text)
        .map_err(|e| SupabaseError::Tool(format!("reading pg_dump: {e}")))?;
    child.finish()?;
    Ok(text)
}

pub struct Restorer<'a> {
    pub handle: &'a Handle,
    /// A current-thread runtime that drives the restore's own connections
    /// from this thread, so COPY data is framed and sent on the thread
    /// that reads it rather than handed to another with a wake-up per write.
    /// Connections opened through `b` live on it and must only be awaited
    /// through `b`.
    pub driver: &'a tokio::runtime::Runtime,
    pub target: &'a DbTarget,
    pub source: &'a dyn StreamSource,
    pub snapshot: DbSnapshot<'a>,
    pub opts: &'a DbRestoreOptions,
}

impl Restorer<'_> {
    /// Run async database work from this (non-runtime) thread.
    fn b<F: std::future::Future>(&self, f: F) -> F::Output {
        self.driver.block_on(f)
    }

    fn exec(&self, c: &Client, phase: &'static str, sql: &str) -> SupabaseResult<()> {
        self.b(c.batch_execute(sql)).map_err(|e| exec_err(phase, sql, &e))
    }

    fn selected(&self, schema: &str, name: &str) -> bool {
        let full = format!("{schema}.{name}");
        if self.opts.exclude_tables.contains(&full) {
            return false;
        }
        if !self.opts.tables.is_empty() {
            return self.opts.tables.contains(&full);
        }
        self.opts.schemas.is_empty() || self.opts.schemas.iter().any(|s| s == schema)
    }

    /// The tables whose rows this restore loads: (schema, name, stream path, rows).
    pub fn tables_to_load(&self) -> Vec<(String, String, String, u64)> {
        self.snapshot.tables().into_iter().filter(|(s, n, _, _)| self.selected(s, n)).collect()
    }

    /// Whole-database restore unless only some tables or schemas were asked for.
    fn full(&self) -> bool {
        self.opts.tables.is_empty() && self.opts.schemas.is_empty()
    }

    /// Build the statements of the definition phases (for --dry-run and
    /// --emit-sql as well as for the run itself).
    pub fn plan(&self, me: &str, server_major: u32, report: &mut DbRestoreReport) -> SupabaseResult<Vec<Step>> {
        let cx = Context { me };
        let mut steps = Vec::new();
        if !self.full() {
            return Ok(steps);
        }
        let roles = self.source.read_text("db/roles.sql")?;
        for s in cleaned(Stream::Roles, &roles, &cx, report) {
            // Settings on platform roles (pgrst.* on authenticator…) are
            // allowed by the platform's own extension where it has one; a
            // plain server refuses them to non-superusers.
            let head = normalize_head(&s, 200);
            let on_platform_role = head.starts_with("ALTER ROLE ")
                && head.contains(" SET ")
                && head.split('"').nth(1).is_some_and(platform::is_reserved_role);
            steps.push(Step { phase: if on_platform_role { "platform role settings" } else { "roles" }, sql: s });
        }
        let schema = self.source.read_text("db/schema.sql")?;
        let (pre, post): (Vec<String>, Vec<String>) =
            cleaned(Stream::Schema, &schema, &cx, report).into_iter().partition(|s| section(s) == Section::PreData);
        let user_schemas = self.snapshot.strings("user_schemas");
        let platform_schemas = self.snapshot.strings("platform_schemas");
        // Compared as dumped; only what will run is filtered (and reported).
        let platform_snap = split_statements(&self.source.read_text("db/platform_schema.sql")?);
        let platform_target_text = target_platform_ddl(self.handle, self.target, server_major, &platform_schemas)?;
        let platform_target = split_statements(&platform_target_text);
        let additions = platform_additions(&platform_snap, &platform_target, &user_schemas);
        let additions = cleaned(Stream::Platform, &(additions.join(";\n") + ";"), &cx, report);
        let (ppre, ppost): (Vec<String>, Vec<String>) =
            additions.into_iter().partition(|s| section(s) == Section::PreData);
        steps.extend(pre.into_iter().map(|sql| Step { phase: "schema", sql }));
        steps.extend(ppre.into_iter().map(|sql| Step { phase: "platform schemas", sql }));
        steps.push(Step { phase: "data", sql: String::new() });
        steps.extend(post.into_iter().map(|sql| Step { phase: "schema (indexes, constraints, triggers)", sql }));
        steps.extend(ppost.into_iter().map(|sql| Step { phase: "platform schemas (after data)", sql }));
        Ok(steps)
    }

    /// Run the whole restore in one transaction.
    pub fn run(&self, report: &mut DbRestoreReport) -> SupabaseResult<()> {
        let c = self.b(self.target.connect())?;
        let me: String = self.b(c.query_one("SELECT current_user::text", &[])).map_err(SupabaseError::db)?.get(0);
        let major: i32 = self
            .b(c.query_one("SELECT current_setting('server_version_num')::int4 / 10000", &[]))
            .map_err(SupabaseError::db)?
            .get(0);
        let steps = self.plan(&me, major as u32, report)?;
        self.in_transaction(&c, || self.transaction(&c, steps, report))
    }

    /// Run `work` in a transaction: committed if it succeeds, rolled back
    /// (and its error returned) if not.
    fn in_transaction<T>(&self, c: &Client, work: impl FnOnce() -> SupabaseResult<T>) -> SupabaseResult<T> {
        self.exec(c, "begin", "BEGIN")?;
        match work() {
            Ok(v) => {
                self.exec(c, "commit", "COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.b(c.batch_execute("ROLLBACK"));
                Err(e)
            }
        }
    }

    fn transaction(&self, c: &Client, steps: Vec<Step>, report: &mut DbRestoreReport) -> SupabaseResult<()> {
        // pg_dump's statements set search_path to ''; ours qualify every name.
        if self.full() {
            let rows =
                self.b(c.query("SELECT nspname::text FROM pg_namespace ORDER BY 1", &[])).map_err(SupabaseError::db)?;
            for r in rows {
                let s: String = r.get(0);
                if !platform::is_platform_schema(&s) {
                    self.exec(
                        c,
                        "dropping the target's user schemas",
                        &format!("DROP SCHEMA {} CASCADE", quote_ident(&s)),
                    )?;
                }
            }
            // Publications live outside schemas: the user's are replaced too.
            let pubs = self
                .b(c.query(
                    "SELECT pubname::text FROM pg_publication WHERE pubname <> 'supabase_realtime' AND pg_has_role(pubowner, 'USAGE')",
                    &[],
                ))
                .map_err(SupabaseError::db)?;
            for p in pubs {
                let name: String = p.get(0);
                self.exec(
                    c,
                    "dropping the target's publications",
                    &format!("DROP PUBLICATION {}", quote_ident(&name)),
                )?;
            }
            // The public schema as initdb makes it (its grants follow from schema.sql).
            self.exec(
                c,
                "recreating schema public",
                "CREATE SCHEMA IF NOT EXISTS public; GRANT USAGE ON SCHEMA public TO PUBLIC",
            )?;
            for e in self.snapshot.manifest["extensions"].as_array().into_iter().flatten() {
                let (Some(name), Some(schema)) = (e["name"].as_str(), e["schema"].as_str()) else { continue };
                if name == "plpgsql" || !platform::is_platform_schema(schema) {
                    continue; // user-schema extensions come with schema.sql
                }
                let sql = format!(
                    "CREATE SCHEMA IF NOT EXISTS {s}; CREATE EXTENSION IF NOT EXISTS {n} WITH SCHEMA {s}",
                    s = quote_ident(schema),
                    n = quote_ident(name)
                );
                self.exec(c, "extensions", &sql)?;
            }
        }
        let mut data_done = false;
        for step in &steps {
            if step.phase == "data" {
                self.load_data(c, report)?;
                data_done = true;
                continue;
            }
            report.statements += 1;
            if step.phase == "platform role settings" {
                let attempt = format!("SAVEPOINT snap_setting; {}; RELEASE SAVEPOINT snap_setting", step.sql);
                if let Err(e) = self.b(c.batch_execute(&attempt)) {
                    self.exec(
                        c,
                        "platform role settings",
                        "ROLLBACK TO SAVEPOINT snap_setting; RELEASE SAVEPOINT snap_setting",
                    )?;
                    report.notices.push(format!(
                        "not restored ({}): {}; apply it with the platform's tools",
                        pg_message(&e),
                        shown(&step.sql, 160)
                    ));
                }
                continue;
            }
            self.exec(c, step.phase, &step.sql)?;
        }
        if !data_done {
            self.load_data(c, report)?;
        }
        self.exec(c, "search path", "RESET search_path")?;
        if self.full() {
            let mv = self.source.read_text("db/matviews.sql")?;
            for s in split_statements(&mv) {
                self.exec(c, "refreshing materialised views", &s)?;
            }
        }
        if self.opts.disable_cron {
            let has_cron: bool = self
                .b(c.query_one("SELECT to_regclass('cron.job') IS NOT NULL", &[]))
                .map_err(SupabaseError::db)?
                .get(0);
            if has_cron {
                self.exec(c, "disabling cron jobs", "UPDATE cron.job SET active = false")?;
                report.notices.push("pg_cron jobs restored inactive (--disable-cron)".into());
            }
        }
        Ok(())
    }

    fn load_data(&self, c: &Client, report: &mut DbRestoreReport) -> SupabaseResult<()> {
        let tables = self.tables_to_load();
        for t in &self.opts.tables {
            if !tables.iter().any(|(s, n, _, _)| &format!("{s}.{n}") == t) {
                return Err(SupabaseError::Config(format!("--table {t}: the snapshot has no rows of such a table")));
            }
        }
        // Existing rows are replaced: platform tables (and, for --table, the
        // named ones) are emptied first; user tables were created empty.
        let existing: BTreeSet<(String, String)> = {
            let rows = self
                .b(c.query(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p')",
                    &[],
                ))
                .map_err(SupabaseError::db)?;
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let truncate: Vec<String> = tables
            .iter()
            .filter(|(s, n, _, _)| existing.contains(&(s.clone(), n.clone())))
            .filter(|(s, _, _, _)| !self.full() || platform::is_platform_schema(s))
            .map(|(s, n, _, _)| format!("{}.{}", quote_ident(s), quote_ident(n)))
            .collect();
        if !truncate.is_empty() {
            self.exec(c, "emptying the tables to restore", &format!("TRUNCATE {}", truncate.join(", ")))?;
        }
        // Hold back triggers and foreign keys while rows go in. The savepoint
        // only catches a refusal: once the setting is in, it is released, so
        // rows load in the top transaction as psql's do. (Left open, every
        // row carried a subtransaction's id: the COPY of a 20M-row table took
        // 27.7 s instead of 20.5, and its primary key 8.7 s instead of 6.5.)
        report.replica_mode = match self.b(c.batch_execute(REPLICA_MODE)) {
            Ok(()) => true,
            Err(e) => {
                let _ = self.b(c.batch_execute("ROLLBACK TO SAVEPOINT snap_replica"));
                report.notices.push(format!(
                    "session_replication_role = replica was refused ({}); rows were loaded before the snapshot's \
                     triggers and constraints were created, platform tables in foreign-key order",
                    pg_message(&e)
                ));
                false
            }
        };
        let order = if report.replica_mode { tables.clone() } else { self.b(fk_order(c, tables.clone()))? };
        for (_, _, path, _) in &order {
            report.rows += self.copy_table(c, path)?;
            report.tables += 1;
        }
        if self.full() {
            let existing_los: i64 = self
                .b(c.query_one("SELECT count(*) FROM pg_largeobject_metadata", &[]))
                .map_err(SupabaseError::db)?
                .get(0);
            if existing_los > 0 {
                self.exec(
                    c,
                    "removing the target's large objects",
                    "SELECT lo_unlink(oid) FROM pg_largeobject_metadata",
                )?;
            }
            for s in split_statements(&self.source.read_text("db/large_objects.sql")?) {
                self.exec(c, "large objects", &s)?;
            }
        }
        for s in split_statements(&self.source.read_text("db/sequences.sql")?) {
            let target_schema = s.split('"').nth(1).unwrap_or_default().to_string();
            if self.full() || self.opts.schemas.contains(&target_schema) {
                self.exec(c, "sequence values", &s)?;
            }
        }
        if report.replica_mode {
            self.exec(c, "replica mode off", "SET LOCAL session_replication_role = origin")?;
        }
        if !self.full() {
            self.b(check_foreign_keys(c, &tables))?;
        }
        Ok(())
    }

    /// COPY one table's stream: its first line is the COPY statement, the
    /// last is the `\.` terminator; rows go in 256 KiB writes.
    fn copy_table(&self, c: &Client, path: &str) -> SupabaseResult<u64> {
        Ok(self.copy_stream(c, path, None)?.rows)
    }

    /// After Storage uploads (which give objects new versions and times),
    /// put the snapshot's owner, version, timestamps and metadata back on
    /// the `storage.objects` rows, matched by bucket and name.
    pub fn restore_object_rows(&self) -> SupabaseResult<u64> {
        let path = "db/data/storage/objects.sql";
        let c = self.b(self.target.connect())?;
        self.in_transaction(&c, || {
            // The platform's update trigger would stamp updated_at with now().
            if self.b(c.batch_execute(REPLICA_MODE)).is_err() {
                self.exec(&c, "object rows", "ROLLBACK TO SAVEPOINT snap_replica")?;
            }
            self.exec(&c, "object rows", "CREATE TEMP TABLE snap_objects (LIKE storage.objects) ON COMMIT DROP")?;
            let loaded = self.copy_stream(&c, path, Some("pg_temp.snap_objects"))?;
            let set: Vec<String> = loaded
                .columns
                .iter()
                .filter(|c| !["id", "bucket_id", "name"].contains(&c.as_str()))
                .map(|c| format!("{q} = t.{q}", q = quote_ident(c)))
                .collect();
            if set.is_empty() {
                return Ok(0);
            }
            let sql = format!(
                "UPDATE storage.objects o SET {} FROM pg_temp.snap_objects t WHERE o.bucket_id = t.bucket_id AND o.name = t.name",
                set.join(", ")
            );
            self.b(c.execute(sql.as_str(), &[])).map_err(|e| exec_err("object rows", &sql, &e))
        })
    }

    /// COPY a stream, into its own table or `into`. The stream is read on
    /// this thread straight into the COPY: its first line is the COPY
    /// statement, the last the `\.` terminator, rows go in 256 KiB writes.
    fn copy_stream(&self, c: &Client, path: &str, into: Option<&str>) -> SupabaseResult<Loaded> {
        let mut w = CopyWriter {
            restorer: self,
            client: c,
            path,
            into,
            header: Vec::new(),
            sink: None,
            stmt: String::new(),
            buf: Vec::with_capacity(COPY_WRITE + 4096),
            rows: 0,
            error: None,
        };
        let copied = self.source.copy_to(path, &mut w);
        if let Some(e) = w.error.take() {
            return Err(e);
        }
        copied?;
        w.finish()
    }
}

/// What a COPY loaded: rows, and the stream's columns (unquoted).
struct Loaded {
    rows: u64,
    columns: Vec<String>,
}

/// Triggers and foreign-key checks off for this transaction, or an error
/// (left to be rolled back to `snap_replica`) where the role may not.
const REPLICA_MODE: &str =
    "SAVEPOINT snap_replica; SET LOCAL session_replication_role = replica; RELEASE SAVEPOINT snap_replica";

/// Bytes of rows sent to the server per write.
const COPY_WRITE: usize = 256 * 1024;

/// Receives a table stream and feeds the server's COPY.
struct CopyWriter<'a> {
    restorer: &'a Restorer<'a>,
    client: &'a Client,
    path: &'a str,
    into: Option<&'a str>,
    header: Vec<u8>,
    sink: Option<Pin<Box<CopyInSink<bytes::Bytes>>>>,
    stmt: String,
    /// Rows not yet sent; always ends with the last 3 bytes seen (held
    /// back, since the stream's final `\.\n` is not data).
    buf: Vec<u8>,
    rows: u64,
    error: Option<SupabaseError>,
}

impl CopyWriter<'_> {
    fn start(&mut self) -> SupabaseResult<()> {
        let header = String::from_utf8_lossy(&self.header).to_string();
        let mut stmt = header.trim_end_matches(';').replace(" FROM stdin", " FROM STDIN");
        if let (Some(table), Some(open)) = (self.into, stmt.find(" (")) {
            stmt = format!("COPY {table}{}", &stmt[open..]);
        }
        if !stmt.starts_with("COPY ") {
            return Err(SupabaseError::Database(format!("{} is not a COPY stream", self.path)));
        }
        let sink = self
            .restorer
            .b(self.client.copy_in::<_, bytes::Bytes>(stmt.as_str()))
            .map_err(|e| exec_err("loading rows", &stmt, &e))?;
        self.sink = Some(Box::pin(sink));
        self.stmt = stmt;
        Ok(())
    }

    /// Send all but the last 3 buffered bytes.
    fn send(&mut self) -> SupabaseResult<()> {
        if self.buf.len() <= 3 {
            return Ok(());
        }
        let keep = self.buf.split_off(self.buf.len() - 3);
        let data = std::mem::replace(&mut self.buf, keep);
        self.rows += memchr::memchr_iter(b'\n', &data).count() as u64;
        let sink = self.sink.as_mut().expect("COPY started");
        self.restorer.b(sink.send(bytes::Bytes::from(data))).map_err(|e| exec_err("loading rows", &self.stmt, &e))
    }

    fn finish(mut self) -> SupabaseResult<Loaded> {
        if self.sink.is_none() {
            return Err(SupabaseError::Database(format!("{} is empty", self.path)));
        }
        self.send()?;
        if self.buf != b"\\.\n" {
            return Err(SupabaseError::Database(format!("{} does not end with the COPY terminator", self.path)));
        }
        let sink = self.sink.as_mut().expect("COPY started");
        self.restorer.b(sink.as_mut().finish()).map_err(|e| exec_err("loading rows", &self.stmt, &e))?;
        let columns = super::copytext::header_columns(&String::from_utf8_lossy(&self.header));
        Ok(Loaded { rows: self.rows, columns })
    }

    fn feed(&mut self, mut data: &[u8]) -> SupabaseResult<()> {
        if self.sink.is_none() {
            match data.iter().position(|&b| b == b'\n') {
                Some(p) => {
                    self.header.extend_from_slice(&data[..p]);
                    data = &data[p + 1..];
                    self.start()?;
                }
                None => {
                    self.header.extend_from_slice(data);
                    return Ok(());
                }
            }
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= COPY_WRITE {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for CopyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self.feed(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("COPY failed"))
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tables ordered so that referenced tables load before referencing ones
/// (by the target's foreign keys); cycles keep their snapshot order.
async fn fk_order(
    c: &Client,
    tables: Vec<(String, String, String, u64)>,
) -> SupabaseResult<Vec<(String, String, String, u64)>> {
    let deps: Vec<((String, String), (String, String))> =
        super::catalog::foreign_keys(c).await?.into_iter().map(|k| (k.child, k.parent)).collect();
    let mut done: Vec<(String, String, String, u64)> = Vec::new();
    let mut left = tables;
    while !left.is_empty() {
        let ready = left.iter().position(|(s, n, _, _)| {
            deps.iter()
                .filter(|(child, parent)| child == &(s.clone(), n.clone()) && parent != child)
                .all(|(_, parent)| !left.iter().any(|(ps, pn, _, _)| (ps, pn) == (&parent.0, &parent.1)))
        });
        let i = ready.unwrap_or(0);
        done.push(left.remove(i));
    }
    Ok(done)
}

/// After `--table`, every foreign key into or out of the restored tables
/// must hold; a violation rolls the restore back with a report.
async fn check_foreign_keys(c: &Client, tables: &[(String, String, String, u64)]) -> SupabaseResult<()> {
    let touched: HashSet<(String, String)> = tables.iter().map(|(s, n, _, _)| (s.clone(), n.clone())).collect();
    let mut violations = Vec::new();
    for k in super::catalog::foreign_keys(c).await? {
        if !touched.contains(&k.child) && !touched.contains(&k.parent) {
            continue;
        }
        let ((cs, cn), (ps, pn), name) = (&k.child, &k.parent, &k.name);
        let not_null = k.child_columns.iter().map(|c| format!("c.{c} IS NOT NULL")).collect::<Vec<_>>().join(" AND ");
        let join = k
            .child_columns
            .iter()
            .zip(&k.parent_columns)
            .map(|(a, b)| format!("p.{b} = c.{a}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "SELECT count(*) FROM {}.{} c WHERE {not_null} AND NOT EXISTS (SELECT 1 FROM {}.{} p WHERE {join})",
            quote_ident(cs),
            quote_ident(cn),
            quote_ident(ps),
            quote_ident(pn)
        );
        let n: i64 = c.query_one(&sql, &[]).await.map_err(SupabaseError::db)?.get(0);
        if n > 0 {
            violations.push(format!("{n} rows of {cs}.{cn} break foreign key {name} to {ps}.{pn}"));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(SupabaseError::Database(format!(
            "the restored rows would break foreign keys: {}; nothing was changed (restore the related tables too)",
            violations.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_in_messages_hide_passwords() {
        let s = shown("ALTER ROLE \"app\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc''x'", 200);
        assert_eq!(s, "ALTER ROLE \"app\" WITH LOGIN PASSWORD '[REDACTED]'");
    }

    #[test]
    fn platform_additions_add_columns_and_user_objects_only() {
        let snap = vec![
            "CREATE TABLE \"auth\".\"users\" (\n    \"id\" \"uuid\" NOT NULL,\n    \"email\" character varying(255),\n    \"referral_code\" \"text\" DEFAULT 'x, y'::\"text\"\n)".to_string(),
            "CREATE INDEX \"users_email_lower_idx\" ON \"auth\".\"users\" USING \"btree\" (\"lower\"((\"email\")::\"text\"))".to_string(),
            "CREATE TRIGGER \"on_auth_user_created\" AFTER INSERT ON \"auth\".\"users\" FOR EACH ROW EXECUTE FUNCTION \"public\".\"handle_new_user\"()".to_string(),
            "CREATE INDEX \"users_instance_id_idx\" ON \"auth\".\"users\" USING \"btree\" (\"instance_id\")".to_string(),
            "CREATE POLICY \"avatar uploads\" ON \"storage\".\"objects\" FOR INSERT TO \"authenticated\" WITH CHECK (true)".to_string(),
        ];
        let target = vec![
            "CREATE TABLE \"auth\".\"users\" (\n    \"id\" \"uuid\" NOT NULL,\n    \"email\" character varying(255)\n)"
                .to_string(),
            "CREATE INDEX  \"users_instance_id_idx\" ON \"auth\".\"users\" USING \"btree\" (\"instance_id\")"
                .to_string(),
        ];
        let add = platform_additions(&snap, &target, &["public".to_string()]);
        assert_eq!(add.len(), 4, "{add:#?}");
        assert_eq!(add[0], "ALTER TABLE \"auth\".\"users\" ADD COLUMN IF NOT EXISTS \"referral_code\" \"text\" DEFAULT 'x, y'::\"text\"");
        assert!(add[1].starts_with("CREATE INDEX IF NOT EXISTS \"users_email_lower_idx\""));
        assert!(add[2].starts_with("CREATE OR REPLACE TRIGGER \"on_auth_user_created\""));
        assert!(
            add[3].starts_with("DROP POLICY IF EXISTS \"avatar uploads\" ON \"storage\".\"objects\"; CREATE POLICY")
        );
    }
}
