//! `snap restore ID` into a project: round trips from the Supabase-like
//! fixture into a fresh project, idempotence, drift, atomicity, --table
//! with foreign-key checks, and loading without replica mode.

mod common;

use common::pg::Cluster;
use common::storage::StorageServer;
use common::{Env, Run};
use serde_json::json;

fn with_project(env: &Env, db: &Cluster, storage: Option<&StorageServer>, args: &[&str]) -> Run {
    let mut c = env.command(args);
    c.env("SUPABASE_DB_URL", db.url()).env("PGPASSWORD", "postgres").env_remove("SUPABASE_URL");
    match storage {
        Some(s) => c.env("SUPABASE_STORAGE_URL", s.url()).env("SUPABASE_SERVICE_ROLE_KEY", &s.key),
        None => c.env_remove("SUPABASE_STORAGE_URL").env_remove("SUPABASE_SERVICE_ROLE_KEY"),
    };
    common::finish(c.output().unwrap())
}

/// A fingerprint of everything a restore must bring back: every user and
/// platform-data table's rows (order-independent), roles, grants,
/// policies, triggers, sequences, publication membership, large objects.
fn fingerprint(db: &Cluster) -> Vec<(String, String)> {
    let tables = db.psql_as(
        "supabase_admin",
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'realtime', 'extensions')
           AND (n.nspname, c.relname) NOT IN (('auth', 'schema_migrations'), ('storage', 'migrations'))
         ORDER BY 1;",
    );
    let mut out = Vec::new();
    for t in tables.lines().filter(|l| !l.is_empty()) {
        let q = format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '') FROM {t} x;"
        );
        out.push((t.to_string(), db.psql_as("supabase_admin", &q).trim().to_string()));
    }
    let catalog = [
        ("roles", "SELECT string_agg(format('%s %s %s %s', rolname, rolcanlogin, rolinherit, rolconfig), ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('app_reader', 'app_writers', 'authenticator');"),
        ("members", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s>%s', r.rolname, m.rolname) AS x FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member WHERE r.rolname IN ('app_writers')) s;"),
        ("policies", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s.%s.%s %s %s', schemaname, tablename, policyname, qual, with_check) AS x FROM pg_policies) s;"),
        ("triggers", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s %s', tgrelid::regclass, pg_get_triggerdef(t.oid)) AS x FROM pg_trigger t WHERE NOT tgisinternal) s;"),
        ("grants", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s %s %s.%s', grantee, privilege_type, table_schema, table_name) AS x FROM information_schema.role_table_grants WHERE grantee IN ('anon', 'authenticated', 'app_reader', 'app_writers') AND table_schema IN ('public', 'api', 'auth')) s;"),
        ("sequences", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s.%s=%s', schemaname, sequencename, last_value) AS x FROM pg_sequences WHERE schemaname IN ('public', 'api')) s;"),
        ("publication", "SELECT string_agg(x, ',' ORDER BY x) FROM (SELECT format('%s %s.%s', pubname, schemaname, tablename) AS x FROM pg_publication_tables WHERE pubname = 'app_changes') s;"),
        ("large objects", "SELECT count(*) || ':' || coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), '') FROM pg_largeobject_metadata;"),
        ("user objects in auth", "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'auth' AND c.relname IN ('users_email_lower_idx', 'recent_signups');"),
        ("auth.users columns", "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'auth.users'::regclass AND attnum > 0 AND NOT attisdropped;"),
        ("matview", "SELECT CASE WHEN to_regclass('api.todo_counts') IS NULL THEN 'none' ELSE (xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM api.todo_counts', false, true, '')))[1]::text END;"),
    ];
    for (name, q) in catalog {
        out.push((name.to_string(), db.psql_as("supabase_admin", q).trim().to_string()));
    }
    out
}

fn assert_same(a: &[(String, String)], b: &[(String, String)]) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x, y, "differs after restore");
    }
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
}

#[test]
fn round_trip_into_a_fresh_project_then_again_then_after_drift() {
    let source = Cluster::supabase_like();
    let source_storage = StorageServer::start("");
    source_storage.create_bucket(json!({"name": "avatars", "public": true, "allowed_mime_types": ["image/png"]}));
    let face = common::noise(300_000, 4);
    source_storage.upload("avatars", "user1/face.png", &face, "image/png", Some(json!({"who": "user1"})));
    source_storage.upload("avatars", "readme.txt", b"hello", "image/png", None);
    let env = Env::new();
    with_project(&env, &source, Some(&source_storage), &["create", "--json"]).ok();
    let expected = fingerprint(&source);

    let target = Cluster::fresh_project();
    let target_storage = StorageServer::start("");
    let r = with_project(&env, &target, Some(&target_storage), &["restore", "latest", "--yes", "--json"]).ok();
    let out = r.json();
    assert!(out["rows"].as_u64().unwrap() > 3000, "{out}");
    assert_eq!(out["objects_uploaded"], 2);
    assert_eq!(out["replica_mode"], true);
    assert_eq!(out["login_roles_needing_password"], json!(["app_reader"]));
    assert_same(&expected, &fingerprint(&target));
    // Bytes, content type and user metadata of objects.
    let (status, body) = target_storage.request("GET", "/object/authenticated/avatars/user1/face.png", &[], b"");
    assert_eq!(status, 200);
    assert!(body == face, "object bytes differ");
    let (_, info) = target_storage.request("GET", "/object/info/authenticated/avatars/user1/face.png", &[], b"");
    let info: serde_json::Value = serde_json::from_slice(&info).unwrap();
    assert_eq!(info["content_type"], "image/png");
    assert_eq!(info["metadata"]["who"], "user1");

    // verify finds nothing after a restore, and each planted difference.
    let v = with_project(&env, &target, Some(&target_storage), &["verify", "latest", "--json"]).ok().json();
    assert_eq!(v["differences"], json!([]), "{v}");
    target.psql_as(
        "postgres",
        "UPDATE public.todos SET done = NOT done WHERE id = 5;
         CREATE POLICY \"planted\" ON public.todos FOR SELECT USING (false);
         GRANT SELECT ON public.legacy_notes TO app_reader;",
    );
    target_storage.delete("avatars", "readme.txt");
    target_storage.upload("avatars", "user1/face.png", b"other bytes", "image/png", None);
    let r = with_project(&env, &target, Some(&target_storage), &["verify", "latest", "--json"]);
    assert_eq!(r.code, 15, "{}", r.stderr);
    let d = r.json()["differences"].to_string();
    for needle in [
        "public.todos",
        "planted",
        "app_reader SELECT on public.legacy_notes",
        "avatars/readme.txt",
        "avatars/user1/face.png",
    ] {
        assert!(d.contains(needle), "{needle} not reported: {d}");
    }
    let quick =
        with_project(&env, &target, Some(&target_storage), &["verify", "latest", "--quick", "--only", "storage"]);
    assert_eq!(quick.code, 15);

    // The same restore again gives the same state, verified.
    with_project(&env, &target, Some(&target_storage), &["restore", "latest", "--yes", "--verify"]).ok();
    assert_same(&expected, &fingerprint(&target));

    // Drift: extra tables, changed rows, an extra object; restore replaces it all.
    target.psql_as(
        "postgres",
        "CREATE TABLE public.extra (x int); INSERT INTO public.extra VALUES (1);
         UPDATE public.todos SET task = 'changed' WHERE id < 10; UPDATE auth.users SET email = 'drift@example.com' WHERE email = 'user3@example.com'; DELETE FROM auth.identities WHERE provider_id LIKE '%0004';",
    );
    target_storage.upload("avatars", "stray.png", b"stray", "image/png", None);
    let out = with_project(&env, &target, Some(&target_storage), &["restore", "latest", "--yes", "--json"]).ok().json();
    assert_eq!(out["objects_deleted"], 1, "{out}");
    assert_same(&expected, &fingerprint(&target));
    let (status, _) = target_storage.request("GET", "/object/authenticated/avatars/stray.png", &[], b"");
    assert_eq!(status, 400, "stray object deleted");
}

#[test]
fn a_failing_statement_leaves_the_project_unchanged() {
    let source = Cluster::supabase_like();
    let env = Env::new();
    with_project(&env, &source, None, &["create", "--only", "db"]).ok();
    let target = Cluster::fresh_project();
    // A table where the snapshot has a view: creating the view fails.
    target.psql_as("postgres", "CREATE TABLE auth.recent_signups (x int); CREATE TABLE public.keepme (x int); INSERT INTO public.keepme VALUES (42);");
    let before = fingerprint(&target);
    let r = with_project(&env, &target, None, &["restore", "latest", "--only", "db", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("recent_signups") && r.stderr.contains("nothing was changed"), "{}", r.stderr);
    assert_same(&before, &fingerprint(&target));
}

#[test]
fn single_table_restore_checks_foreign_keys() {
    let db = Cluster::supabase_like();
    let env = Env::new();
    with_project(&env, &db, None, &["create", "--only", "db"]).ok();
    db.psql_as(
        "postgres",
        "UPDATE public.todos SET task = 'drifted' WHERE id <= 100; UPDATE public.legacy_notes SET body = 'kept';",
    );
    let out =
        with_project(&env, &db, None, &["restore", "latest", "--table", "public.todos", "--yes", "--json"]).ok().json();
    assert_eq!(out["tables"], 1);
    assert_eq!(db.psql_as("postgres", "SELECT count(*) FROM public.todos WHERE task = 'drifted';").trim(), "0");
    assert_eq!(
        db.psql_as("postgres", "SELECT count(DISTINCT body) FROM public.legacy_notes;").trim(),
        "1",
        "other tables untouched"
    );

    // A user the todos point at is gone: restoring todos alone would break the foreign key.
    db.psql_as(
        "supabase_admin",
        "SET session_replication_role = replica; DELETE FROM auth.users WHERE email = 'user2@example.com';",
    );
    let r = with_project(&env, &db, None, &["restore", "latest", "--table", "public.todos", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("foreign key") && r.stderr.contains("public.todos"), "{}", r.stderr);
}

#[test]
fn rows_all_load_where_replica_mode_is_refused() {
    let source = Cluster::supabase_like();
    let env = Env::new();
    with_project(&env, &source, None, &["create", "--only", "db"]).ok();
    let expected = fingerprint(&source);
    let target = Cluster::fresh_project();
    target.psql_as("supabase_admin", "REVOKE SET ON PARAMETER session_replication_role FROM postgres;");
    let r = with_project(&env, &target, None, &["restore", "latest", "--only", "db", "--yes", "--json"]).ok();
    assert_eq!(r.json()["replica_mode"], false);
    let notices = r.json()["notices"].to_string();
    assert!(notices.contains("replica was refused"), "{notices}");
    assert_same(&expected, &fingerprint(&target));
}

#[test]
fn dry_run_and_emit_sql_change_nothing() {
    let source = Cluster::supabase_like();
    let env = Env::new();
    with_project(&env, &source, None, &["create", "--only", "db"]).ok();
    let target = Cluster::fresh_project();
    let before = fingerprint(&target);
    let out = with_project(&env, &target, None, &["restore", "latest", "--dry-run", "--json", "--emit-sql", "sql"])
        .ok()
        .json();
    assert!(out["plan"]["database"]["tables_to_load"].as_array().unwrap().len() >= 10, "{out}");
    let sql = std::fs::read_to_string(env.path("sql/restore.sql")).unwrap();
    assert!(sql.contains("CREATE TABLE") && !sql.contains("OWNER TO \"supabase_admin\""));
    assert_same(&before, &fingerprint(&target));
    // Without --yes and without a terminal, nothing happens.
    let r = with_project(&env, &target, None, &["restore", "latest"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--yes"));
}

#[test]
fn large_objects_upload_resumably_through_faults() {
    let source = StorageServer::start("");
    source.create_bucket(json!({"name": "media"}));
    let big = common::noise(13 << 20, 8);
    source.upload("media", "video/big.bin", &big, "application/octet-stream", Some(json!({"k": 1})));
    source.upload("media", "small.txt", b"small", "text/plain", None);
    let env = Env::new();
    let store = |s: &StorageServer, args: &[&str]| {
        let mut c = env.command(args);
        c.env("SUPABASE_STORAGE_URL", s.url())
            .env("SUPABASE_SERVICE_ROLE_KEY", &s.key)
            .env_remove("SUPABASE_URL")
            .env_remove("SUPABASE_DB_URL")
            .env("SNAP_HTTP_READ_TIMEOUT", "5");
        common::finish(c.output().unwrap())
    };
    store(&source, &["create", "--only", "storage"]).ok();
    // The target drops a chunk twice (500, 503) and must still end complete.
    let target = StorageServer::start("patch:500,patch:503");
    let out = store(&target, &["restore", "latest", "--only", "storage", "--yes", "--json"]).ok().json();
    assert_eq!(out["objects_uploaded"], 2, "{out}");
    let (status, body) = target.request("GET", "/object/authenticated/media/video/big.bin", &[], b"");
    assert_eq!(status, 200);
    assert!(body == big, "large object differs after a resumable upload");
    store(&target, &["verify", "latest", "--only", "storage"]).ok();
    // A chunk refused for good fails the restore: the resumable path is the one taken.
    let refusing = StorageServer::start("patch:403");
    let r = store(&refusing, &["restore", "latest", "--only", "storage", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("media/video/big.bin") && r.stderr.contains("--only storage"), "{}", r.stderr);
}

#[test]
fn schema_bucket_and_excluded_table_restores_touch_only_what_was_asked() {
    let db = Cluster::supabase_like();
    let storage = StorageServer::start("");
    storage.create_bucket(json!({"name": "a"}));
    storage.create_bucket(json!({"name": "b"}));
    storage.upload("a", "x.txt", b"a-x", "text/plain", None);
    storage.upload("b", "y.txt", b"b-y", "text/plain", None);
    let env = Env::new();
    with_project(&env, &db, Some(&storage), &["create"]).ok();
    db.psql_as(
        "postgres",
        "UPDATE api.documents SET title = 'drift'; UPDATE public.legacy_notes SET body = 'drift'; UPDATE public.todos SET task = 'drift';",
    );
    storage.upload("a", "x.txt", b"changed", "text/plain", None);
    storage.upload("b", "y.txt", b"changed", "text/plain", None);

    // --schema api: only api's rows come back.
    with_project(&env, &db, None, &["restore", "latest", "--only", "db", "--schema", "api", "--yes"]).ok();
    assert_eq!(db.psql_as("postgres", "SELECT title FROM api.documents;").trim(), "hello");
    assert_eq!(db.psql_as("postgres", "SELECT DISTINCT body FROM public.legacy_notes;").trim(), "drift");
    // The whole database, except one table left as it is.
    with_project(&env, &db, None, &["restore", "latest", "--only", "db", "--exclude-table", "public.todos", "--yes"])
        .ok();
    assert_eq!(db.psql_as("postgres", "SELECT count(DISTINCT body) FROM public.legacy_notes;").trim(), "20");
    assert_eq!(
        db.psql_as("postgres", "SELECT count(*) FROM public.todos;").trim(),
        "0",
        "excluded: its rows are not loaded"
    );
    // --bucket a: only that bucket's objects.
    with_project(&env, &db, Some(&storage), &["restore", "latest", "--only", "storage", "--bucket", "a", "--yes"]).ok();
    assert_eq!(storage.request("GET", "/object/authenticated/a/x.txt", &[], b"").1, b"a-x");
    assert_eq!(storage.request("GET", "/object/authenticated/b/y.txt", &[], b"").1, b"changed");
}

#[test]
fn project_restores_from_an_off_site_copy_on_s3() {
    let source = Cluster::supabase_like();
    let source_storage = StorageServer::start("");
    source_storage.create_bucket(json!({"name": "docs", "public": false}));
    let report = common::noise(700_000, 11);
    source_storage.upload("docs", "2026/report.pdf", &report, "application/pdf", None);
    let local = Env::new();
    with_project(&local, &source, Some(&source_storage), &["create", "--json"]).ok();
    let expected = fingerprint(&source);

    // Copy the project snapshot off-site into an S3 repository with its own password.
    let s3 = snap::testing::s3_server::S3TestServer::start().expect("start the S3 test server (moto)");
    s3.create_bucket("offsite").unwrap();
    let offsite = Env::on_s3(&s3.endpoint(), "offsite", "acme");
    offsite.init();
    let mut copy = local.command(&["copy", "--json", "--to-repo", offsite.repo.to_str().unwrap()]);
    for (k, v) in &offsite.vars {
        copy.env(k, v);
    }
    let copied = common::finish(copy.env("SNAP_TO_PASSWORD", "correct horse").output().unwrap()).ok().json();
    assert_eq!(copied["copied"].as_array().unwrap().len(), 1, "{copied}");

    // At 3 a.m. the local disk is gone: restore straight from S3.
    let target = Cluster::fresh_project();
    let target_storage = StorageServer::start("");
    let out =
        with_project(&offsite, &target, Some(&target_storage), &["restore", "latest", "--yes", "--json"]).ok().json();
    assert_eq!(out["objects_uploaded"], 1, "{out}");
    assert_same(&expected, &fingerprint(&target));
    let (status, body) = target_storage.request("GET", "/object/authenticated/docs/2026/report.pdf", &[], b"");
    assert_eq!(status, 200);
    assert!(body == report, "object bytes differ");
    let v = with_project(&offsite, &target, Some(&target_storage), &["verify", "latest", "--json"]).ok().json();
    assert_eq!(v["differences"], json!([]), "{v}");
}

/// Regression: COPY text follows the session's DateStyle, IntervalStyle
/// and extra_float_digits, which a database or role may set. Written as
/// `SQL, DMY` and read back under the target's `ISO, MDY`, 4 March became
/// 3 April, and floats lost digits; the backup now writes ISO dates,
/// postgres-style intervals and every float digit, whatever the source's
/// settings.
#[test]
fn source_session_styles_do_not_change_restored_values() {
    let source = Cluster::supabase_like();
    source.psql_as(
        "supabase_admin",
        "CREATE TABLE public.moments (id int PRIMARY KEY, at timestamptz, d date, span interval, x float8);
         INSERT INTO public.moments VALUES
           (1, '2024-03-04 05:06:07.123456+00', '2024-03-04', '1 day 02:03:04.5', 0.1::float8 + 0.2::float8),
           (2, '1999-12-31 23:59:59+00', '2001-02-03', '-3 years 2 mons', 1e-300);
         ALTER ROLE postgres SET DateStyle = 'SQL, DMY';
         ALTER ROLE postgres SET IntervalStyle = 'sql_standard';
         ALTER ROLE postgres SET extra_float_digits = -3;",
    );
    let show = "SELECT string_agg(format('%s|%s|%s|%s|%s', id, extract(epoch FROM at), d - date '2000-01-01',
                  extract(epoch FROM span), float8send(x)), ';' ORDER BY id) FROM public.moments;";
    let expected = source.psql_as("supabase_admin", show);
    let env = Env::new();
    with_project(&env, &source, None, &["create", "--only", "db", "--json"]).ok();
    let target = Cluster::fresh_project();
    with_project(&env, &target, None, &["restore", "latest", "--only", "db", "--yes"]).ok();
    assert_eq!(target.psql_as("supabase_admin", show), expected);
    // The fingerprints taken at backup match the source under its own settings.
    let v = with_project(&env, &source, None, &["verify", "latest", "--only", "db", "--json"]).ok().json();
    assert_eq!(v["differences"], json!([]), "{v}");
}
