//! `snap create` of a Supabase-like project against a real PostgreSQL
//! cluster: every table's rows down to the bytes, platform-schema user
//! objects, roles, large objects, dedup of an unchanged project, and clean
//! failures that never show a secret.

mod common;

use common::pg::Cluster;
use common::Env;

fn project_env(env: &Env, cluster: &Cluster, password: &str, args: &[&str]) -> common::Run {
    let mut c = env.command(args);
    c.env("SUPABASE_DB_URL", cluster.url())
        .env("PGPASSWORD", password)
        .env_remove("SUPABASE_URL")
        .env_remove("SUPABASE_STORAGE_URL")
        .env_remove("SUPABASE_SERVICE_ROLE_KEY");
    common::finish(c.output().unwrap())
}

fn dump(env: &Env, path: &str) -> Vec<u8> {
    env.snap(&["dump", "latest", path]).ok().raw_stdout
}

/// The COPY body of a dumped table stream (between the header and `\.`).
fn copy_body(stream: &[u8]) -> &[u8] {
    let start = stream.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert!(stream.ends_with(b"\\.\n"), "stream must end with the COPY terminator");
    &stream[start..stream.len() - 3]
}

#[test]
fn database_backup_captures_every_table_and_platform_object() {
    let cluster = Cluster::supabase_like();
    let env = Env::new();
    let run = project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json", "--jobs", "3"]).ok();
    let first = run.json();
    assert!(first["tables"].as_u64().unwrap() >= 10, "{first}");

    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    let snap = &snaps.as_array().unwrap()[0];
    assert_eq!(snap["source"]["kind"], "project");

    // Row for row and byte for byte: each table's stream equals psql's own
    // COPY of the same rows, in the table's physical order as pg_dump reads it.
    let cases = [
        ("public", "todos", "id, owner, task, done, tags, details"),
        ("public", "profiles", "id, username, mood, bio, updated_at"),
        ("auth", "users", "*"),
        ("auth", "identities", "*"),
        ("public", "events_2025", "*"),
        ("public", "events_2026", "*"),
        ("storage", "objects", "*"),
        ("supabase_migrations", "schema_migrations", "*"),
        ("api", "documents", "*"),
    ];
    for (schema, table, cols) in cases {
        let stream = dump(&env, &format!("db/data/{schema}/{table}.sql"));
        let expected = cluster.copy_out(&format!("SELECT {cols} FROM ONLY \"{schema}\".\"{table}\""));
        assert!(!expected.is_empty() || table == "events_2026", "{schema}.{table} has rows in the fixture");
        assert_eq!(copy_body(&stream), &expected[..], "{schema}.{table}");
    }
    // Generated columns are not in the stream; the odd table name is escaped.
    let todos = dump(&env, "db/data/public/todos.sql");
    assert!(todos.starts_with(
        b"COPY \"public\".\"todos\" (\"id\", \"owner\", \"task\", \"done\", \"tags\", \"details\") FROM stdin;\n"
    ));
    let odd = dump(&env, "db/data/public/Odd Name.tbl.sql");
    assert!(String::from_utf8_lossy(&odd).contains("\"v/alue\""));
    // The platform's migrator tables are never captured; realtime's rows neither.
    let ls = env.snap(&["ls", "latest", "db/data/auth"]).ok().stdout;
    assert!(ls.contains("users.sql") && !ls.contains("schema_migrations"), "{ls}");
    assert!(env.snap(&["ls", "latest", "db/data/storage"]).ok().stdout.contains("objects.sql"));
    assert!(!env.snap(&["ls", "latest", "db/data"]).ok().stdout.contains("realtime"));

    // User objects inside platform schemas, none of them named by snap's code.
    let platform = String::from_utf8(dump(&env, "db/platform_schema.sql")).unwrap();
    for needle in ["on_auth_user_created", "users_email_lower_idx", "referral_code", "recent_signups", "avatar uploads"]
    {
        assert!(platform.contains(needle), "{needle} missing from platform_schema.sql");
    }
    assert!(!platform.contains("\\restrict"), "psql meta-commands must be removed");
    let schema = String::from_utf8(dump(&env, "db/schema.sql")).unwrap();
    for needle in [
        "CREATE TYPE \"public\".\"mood\"",
        "\"profiles are public\"",
        "PARTITION BY RANGE",
        "MATERIALIZED VIEW",
        "app_changes",
        "handle_new_user",
    ] {
        assert!(schema.contains(needle), "{needle} missing from schema.sql");
    }
    assert!(!schema.contains("CREATE SCHEMA \"auth\""), "platform schemas stay out of schema.sql");

    // Roles: without passwords (postgres cannot read them), and the manifest says which need one.
    let roles = String::from_utf8(dump(&env, "db/roles.sql")).unwrap();
    assert!(roles.contains("\"app_reader\"") && roles.contains("statement_timeout"), "{roles}");
    assert!(!roles.contains("SCRAM-SHA-256$"), "no password hashes are readable by postgres");
    let sequences = String::from_utf8(dump(&env, "db/sequences.sql")).unwrap();
    assert!(sequences.contains("legacy_notes_note_id_seq\"', 500, true)"), "{sequences}");
    let los = String::from_utf8(dump(&env, "db/large_objects.sql")).unwrap();
    assert!(los.contains("lo_create") && los.contains(&hex_of("large object data ")), "large object content missing");
    let mv = String::from_utf8(dump(&env, "db/matviews.sql")).unwrap();
    assert!(mv.contains("REFRESH MATERIALIZED VIEW \"api\".\"todo_counts\""));

    // The second backup of an unchanged project adds almost nothing.
    let second = project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok().json();
    let added = second["bytes_added"].as_u64().unwrap();
    assert!(added < first["bytes_added"].as_u64().unwrap() / 5, "second create added {added} bytes");
    assert!(second["chunks_new"].as_u64().unwrap() <= 3, "{second}");

    // A changed row changes only its table's stream.
    cluster.psql_as("postgres", "UPDATE public.todos SET done = NOT done WHERE id = 7;");
    project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok();
    let diff = env.snap(&["diff", &snaps[0]["id"].as_str().unwrap()[..12], "latest"]).ok().stdout;
    // Only metadata (capture time) changes elsewhere: content changed in one stream.
    let modified: Vec<&str> = diff.lines().filter(|l| l.starts_with("M ")).collect();
    assert_eq!(modified, ["M /db/data/public/todos.sql"], "{diff}");
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bad_settings_fail_cleanly_without_showing_secrets() {
    let cluster = Cluster::supabase_like();
    let env = Env::new();
    let wrong = "wrong-Pa55word-xyz";
    let r = project_env(&env, &cluster, wrong, &["create", "--only", "db"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("password authentication failed"), "{}", r.stderr);
    assert!(!r.stderr.contains(wrong) && !r.stdout.contains(wrong));
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);

    // A password on the command line is refused before anything runs.
    let url = format!("postgres://postgres:{wrong}@127.0.0.1:{}/postgres", cluster.port);
    let r = env.snap(&["create", "--only", "db", "--db-url", &url]);
    r.fails_with(2, "must not contain a password");

    // No database configured: the error names the variable.
    let mut c = env.command(&["create", "--only", "db"]);
    c.env_remove("SUPABASE_DB_URL");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SUPABASE_DB_URL"));

    // An unreachable database.
    let mut c = env.command(&["create", "--only", "db"]);
    c.env("SUPABASE_DB_URL", "postgres://postgres@127.0.0.1:1/postgres").env("PGPASSWORD", wrong);
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect") && !stderr.contains(wrong), "{stderr}");
    assert!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().is_empty());
}

#[test]
fn whole_project_from_an_env_file_in_one_snapshot() {
    let cluster = Cluster::supabase_like();
    let storage = common::storage::StorageServer::start("");
    storage.create_bucket(serde_json::json!({"name": "avatars", "public": true}));
    storage.upload("avatars", "user1/face.png", &vec![7u8; 200_000], "image/png", None);
    let env = Env::new();
    std::fs::write(env.path("key"), format!("{}\n", storage.key)).unwrap();
    std::fs::write(env.path("dbpw"), "postgres\n").unwrap();
    std::fs::write(
        env.path(".env"),
        format!(
            "# project settings\nSUPABASE_URL=https://demo-ref.supabase.co\nSUPABASE_DB_URL={}\nPGPASSWORD_FILE={}\n\
             SUPABASE_STORAGE_URL={}\nSUPABASE_SERVICE_ROLE_KEY_FILE={}\n",
            cluster.url(),
            env.path("dbpw").display(),
            storage.url(),
            env.path("key").display()
        ),
    )
    .unwrap();
    let clean = |args: &[&str]| {
        let mut c = env.command(args);
        for v in ["SUPABASE_URL", "SUPABASE_DB_URL", "SUPABASE_STORAGE_URL", "SUPABASE_SERVICE_ROLE_KEY", "PGPASSWORD"]
        {
            c.env_remove(v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = clean(&["create", "--json"]);
    assert_eq!(first["parts"], serde_json::json!(["db", "storage"]));
    assert_eq!(first["source"]["url"], "https://demo-ref.supabase.co");
    assert_eq!(first["objects"], 1);
    assert!(first["tables"].as_u64().unwrap() >= 10);
    let second = clean(&["create", "--json"]);
    assert_eq!(second["objects_downloaded"], 0, "{second}");
    assert!(second["chunks_new"].as_u64().unwrap() <= 3, "{second}");
    let show = clean(&["show", "latest", "--json"]);
    let extra = &show["extra"];
    assert_eq!(extra["project_url"], "https://demo-ref.supabase.co");
    assert!(extra["database"]["server_version"].as_str().unwrap().starts_with(char::is_numeric));
    assert!(extra["database"]["extensions"].as_array().unwrap().iter().any(|e| e["name"] == "pgcrypto"));
    let users = extra["database"]["tables"].as_array().unwrap().iter().find(|t| t["name"] == "users").unwrap().clone();
    assert_eq!(users["rows"], 50);
    assert!(users["bytes"].as_u64().unwrap() > 1000);
    assert_eq!(extra["database"]["login_roles_without_password"], serde_json::json!(["app_reader"]));
    // Nothing secret in the manifest.
    let text = show.to_string();
    assert!(!text.contains(&storage.key) && !text.contains("PGPASSWORD"), "secret in manifest");
}

#[test]
fn one_point_in_time_while_writes_continue() {
    // Two tables written in the same transactions stay equal in the
    // snapshot although they stream on different connections.
    let cluster = Cluster::supabase_like();
    cluster.psql_as(
        "postgres",
        "CREATE TABLE public.ledger_a (id bigint PRIMARY KEY, v text); CREATE TABLE public.ledger_b (id bigint PRIMARY KEY, v text);
         INSERT INTO public.ledger_a SELECT g, repeat('a', 200) FROM generate_series(1, 20000) g;
         INSERT INTO public.ledger_b SELECT g, repeat('b', 200) FROM generate_series(1, 20000) g;",
    );
    let env = Env::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let sock = cluster.dir.path().to_path_buf();
        let (bin, port) = (cluster.bin.clone(), cluster.port);
        std::thread::spawn(move || {
            let mut n = 100_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sql = format!(
                    "BEGIN; INSERT INTO public.ledger_a SELECT g, 'x' FROM generate_series({n}, {m}) g;
                     INSERT INTO public.ledger_b SELECT g, 'y' FROM generate_series({n}, {m}) g; COMMIT;",
                    m = n + 499
                );
                let _ = std::process::Command::new(bin.join("psql"))
                    .args(["-X", "-q", "-h"])
                    .arg(&sock)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-c", &sql])
                    .output();
                n += 500;
            }
        })
    };
    for _ in 0..3 {
        project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--jobs", "4"]).ok();
        let show = env.snap(&["show", "latest", "--json"]).ok().json();
        let rows = |name: &str| {
            show["extra"]["database"]["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["rows"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(rows("ledger_a"), rows("ledger_b"), "streams from different points in time");
        assert_eq!(show["extra"]["database"]["consistent"], true);
        let a = dump(&env, "db/data/public/ledger_a.sql");
        assert_eq!(a.iter().filter(|&&b| b == b'\n').count() as u64 - 2, rows("ledger_a"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn transaction_pooler_port_is_detected_and_falls_back_to_one_transaction() {
    // Supabase's transaction pooler listens on 6543; a URL with that port
    // cannot share an exported snapshot between connections.
    let Some(cluster) = Cluster::start_at(6543) else {
        eprintln!("port 6543 is busy here; skipping");
        return;
    };
    let cluster = cluster.with_fixture();
    let env = Env::new();
    let r = project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json", "--jobs", "4"]).ok();
    assert!(r.stderr.contains("transaction pooler") && r.stderr.contains("session pooler"), "{}", r.stderr);
    let show = env.snap(&["show", "latest", "--json"]).ok().json();
    assert_eq!(show["extra"]["database"]["consistent"], false);
    let todos = dump(&env, "db/data/public/todos.sql");
    let expected = cluster.copy_out("SELECT id, owner, task, done, tags, details FROM ONLY public.todos");
    assert_eq!(copy_body(&todos), &expected[..]);
}

#[test]
fn roles_with_passwords_when_the_connection_may_read_them() {
    // As the cluster superuser, role passwords are readable and kept.
    let cluster = Cluster::supabase_like();
    let env = Env::new();
    let mut c = env.command(&["create", "--only", "db", "--json"]);
    c.env("SUPABASE_DB_URL", format!("postgres://supabase_admin@127.0.0.1:{}/postgres", cluster.port))
        .env("PGPASSWORD", "admin-secret");
    common::finish(c.output().unwrap()).ok();
    let roles = String::from_utf8(env.snap(&["dump", "latest", "db/roles.sql"]).ok().raw_stdout).unwrap();
    assert!(roles.contains("\"app_reader\"") && roles.contains("SCRAM-SHA-256$"), "{roles}");
    let show = env.snap(&["show", "latest", "--json"]).ok().json();
    assert_eq!(show["extra"]["database"]["role_passwords"], true);
    assert!(show["extra"]["database"]["login_roles_without_password"].as_array().unwrap().is_empty());
}

#[test]
fn tables_the_connection_cannot_read_are_reported_not_fatal() {
    let cluster = Cluster::supabase_like();
    // A table the platform's superuser made and never granted to postgres.
    cluster.psql_as(
        "supabase_admin",
        "CREATE TABLE public.admin_only (x int PRIMARY KEY); INSERT INTO public.admin_only VALUES (1);
         REVOKE ALL ON public.admin_only FROM postgres, anon, authenticated, service_role;",
    );
    let env = Env::new();
    let r = project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok();
    // (The role's name is also its password here, so the log redacts it.)
    assert!(r.stderr.contains("public.admin_only is not readable by"), "{}", r.stderr);
    let show = env.snap(&["show", "latest", "--json"]).ok().json();
    assert_eq!(show["extra"]["database"]["unreadable_tables"], serde_json::json!(["public.admin_only"]));
    assert!(show["extra"]["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("admin_only")));
}

#[test]
fn one_table_dumps_as_csv_and_json_without_a_database() {
    let cluster = Cluster::supabase_like();
    let env = Env::new();
    project_env(&env, &cluster, "postgres", &["create", "--only", "db"]).ok();
    drop(cluster);
    let csv = env.snap(&["dump", "latest", "--table", "public.profiles", "--format", "csv"]).ok().stdout;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,username,mood,bio,updated_at"));
    assert!(csv.contains("\"line one\nline two\ttabbed \\ backslash\""), "{csv}");
    let json: serde_json::Value = serde_json::from_str(
        &env.snap(&["dump", "latest", "--table", "public.profiles", "--format", "json"]).ok().stdout,
    )
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 50);
    let user1 = json.as_array().unwrap().iter().find(|r| r["username"] == "user1").unwrap();
    assert_eq!(user1["bio"], "line one\nline two\ttabbed \\ backslash");
    assert!(json.as_array().unwrap().iter().any(|r| r["bio"].is_null()));
    env.snap(&["dump", "latest", "--table", "public.nope"]).fails_with(14, "no rows of table public.nope");
}

/// A table whose rows compress 50-fold is cut in chunks 64 times the
/// usual size (fewer, each storing more than its per-blob cost); the
/// choice is recorded, kept by the next backup, and a changed row still
/// changes only a little; text-like rows keep the usual chunks. Both
/// streams are the table's COPY to the byte.
#[test]
fn very_compressible_tables_get_larger_chunks_that_stay_stable() {
    let cluster = Cluster::fresh_project();
    cluster.psql_as(
        "postgres",
        "CREATE TABLE public.accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
         INSERT INTO public.accounts SELECT g, 1 + g / 100000, 0, '' FROM generate_series(1, 60000) g;
         CREATE TABLE public.notes (id int PRIMARY KEY, body text);
         INSERT INTO public.notes SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g;",
    );
    let env = Env::new();
    let scales = |env: &Env| -> Vec<(String, Option<u64>)> {
        let show = env.snap(&["show", "latest", "--json"]).ok().json();
        let tables = show["extra"]["database"]["tables"].as_array().unwrap().clone();
        let mut v: Vec<(String, Option<u64>)> = tables
            .iter()
            .filter(|t| t["schema"] == "public")
            .map(|t| (t["name"].as_str().unwrap().to_string(), t["chunk_scale"].as_u64()))
            .collect();
        v.sort();
        v
    };
    let chunks = |env: &Env, path: &str| -> usize {
        let ls = env.snap(&["ls", "--json", "latest", "db/data/public"]).ok().json();
        let entry = ls.as_array().unwrap().iter().find(|e| e["path"] == format!("/{path}")).unwrap().clone();
        entry["chunks"].as_u64().unwrap() as usize
    };
    project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok();
    assert_eq!(scales(&env), [("accounts".to_string(), Some(3)), ("notes".to_string(), None)]);
    for table in ["accounts", "notes"] {
        let stream = dump(&env, &format!("db/data/public/{table}.sql"));
        assert_eq!(copy_body(&stream), &cluster.copy_out(&format!("SELECT * FROM ONLY public.{table}"))[..]);
    }
    let accounts_chunks = chunks(&env, "db/data/public/accounts.sql");
    let notes_chunks = chunks(&env, "db/data/public/notes.sql");
    assert!(accounts_chunks <= 20 && notes_chunks >= 200, "{accounts_chunks} and {notes_chunks} chunks");

    cluster.psql_as("postgres", "UPDATE public.accounts SET abalance = 17 WHERE aid = 30000;");
    let second = project_env(&env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok().json();
    assert_eq!(scales(&env)[0], ("accounts".to_string(), Some(3)));
    assert!(second["bytes_added"].as_u64().unwrap() < 150_000, "{second}");
    let stream = dump(&env, "db/data/public/accounts.sql");
    assert_eq!(copy_body(&stream), &cluster.copy_out("SELECT * FROM ONLY public.accounts")[..]);
}

/// A large table of text gets a zstd dictionary, which the next backup
/// keeps. Renamed and without its first rows, it is a new stream with a
/// dictionary trained on other rows, while most of its chunks are still
/// those the first dictionary compressed: with every earlier snapshot
/// forgotten and pruned, both dictionaries stay, and the table reads back
/// as its COPY, and restores into a fresh project row for row.
#[test]
fn large_text_tables_are_compressed_with_a_dictionary_that_prune_keeps() {
    let cluster = Cluster::fresh_project();
    cluster.psql_as(
        "postgres",
        "CREATE TABLE public.articles (id int PRIMARY KEY, body text);
         INSERT INTO public.articles
         SELECT g, string_agg(substr(md5(w::text), 1, 3 + w % 6), ' ' ORDER BY k)
         FROM (SELECT g, k, abs(('x' || substr(md5((g * 40 + k)::text), 1, 8))::bit(32)::int) % 300 AS w
               FROM generate_series(1, 20000) g, generate_series(1, 40) k) s
         GROUP BY g;
         ANALYZE public.articles;",
    );
    let env = Env::new();
    let dictionary_of = |env: &Env, name: &str| -> Option<String> {
        let show = env.snap(&["show", "latest", "--json"]).ok().json();
        let tables = show["extra"]["database"]["tables"].as_array().unwrap().clone();
        let t = tables.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no table {name}"));
        t["dictionary"].as_str().map(str::to_string)
    };
    let dictionaries = |env: &Env| env.snap(&["stats", "--json"]).ok().json()["dictionary_blobs"].as_u64().unwrap();
    let backup = |env: &Env| project_env(env, &cluster, "postgres", &["create", "--only", "db", "--json"]).ok().json();
    let same_as_table = |env: &Env, name: &str| {
        let stream = dump(env, &format!("db/data/public/{name}.sql"));
        assert!(copy_body(&stream) == &cluster.copy_out(&format!("SELECT * FROM ONLY public.{name}"))[..], "{name}");
    };

    let first_snapshot = backup(&env)["snapshot_id"].as_str().unwrap().to_string();
    let first = dictionary_of(&env, "articles").expect("a dictionary for a 6 MB table of text");
    assert_eq!(dictionary_of(&env, "users"), None);
    assert_eq!(dictionaries(&env), 1);
    same_as_table(&env, "articles");

    cluster.psql_as("postgres", "UPDATE public.articles SET body = body || ' edited' WHERE id = 15000;");
    let second = backup(&env);
    assert_eq!(dictionary_of(&env, "articles").as_deref(), Some(&first[..]));
    assert!(second["bytes_added"].as_u64().unwrap() < 100_000, "{second}");

    cluster.psql_as(
        "postgres",
        "ALTER TABLE public.articles RENAME TO posts; DELETE FROM public.posts WHERE id <= 4000; ANALYZE public.posts;",
    );
    let third = backup(&env);
    let newer = dictionary_of(&env, "posts").expect("a dictionary");
    assert!(third["bytes_added"].as_u64().unwrap() < 400_000, "most chunks are stored already: {third}");
    let third = third["snapshot_id"].as_str().unwrap().to_string();
    assert_ne!(newer, first, "trained on other rows");
    assert_eq!(dictionaries(&env), 2);

    let second_snapshot = second["snapshot_id"].as_str().unwrap();
    env.snap(&["forget", &first_snapshot[..8], &second_snapshot[..8]]).ok();
    env.snap(&["prune", "--no-forget", "--max-unused", "0%"]).ok();
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 1);
    assert_eq!(dictionaries(&env), 2);
    env.snap(&["check", "--read-data"]).ok();
    same_as_table(&env, "posts");
    env.snap(&["show", &third[..8]]).ok();

    // And the rows load into a fresh project as they were.
    let target = Cluster::fresh_project();
    project_env(&env, &target, "postgres", &["restore", "latest", "--only", "db", "--yes"]).ok();
    let query = "SELECT * FROM ONLY public.posts";
    assert!(target.copy_out(query) == cluster.copy_out(query), "the restored table differs");
}
