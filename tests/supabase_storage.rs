//! `snap create --only storage` against the project's Storage test server:
//! every bucket and object with its metadata, byte for byte; incremental
//! backups that download nothing for unchanged objects; retries through
//! injected faults; deleted objects; clean failures that hide the key.

mod common;

use common::storage::StorageServer;
use common::{Env, Run};
use serde_json::json;

fn run(env: &Env, server: &StorageServer, key: &str, args: &[&str]) -> Run {
    let mut c = env.command(args);
    c.env("SUPABASE_STORAGE_URL", server.url())
        .env("SUPABASE_SERVICE_ROLE_KEY", key)
        .env_remove("SUPABASE_URL")
        .env_remove("SUPABASE_DB_URL")
        // The test server stalls a cut response instead of closing it.
        .env("SNAP_HTTP_READ_TIMEOUT", "2");
    common::finish(c.output().unwrap())
}

fn noise(n: usize, seed: u8) -> Vec<u8> {
    common::noise(n, seed as u64)
}

fn seed(server: &StorageServer) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    server.create_bucket(json!({"name": "avatars", "public": true, "file_size_limit": 10_000_000,
                                "allowed_mime_types": ["image/png", "application/octet-stream"]}));
    server.create_bucket(json!({"name": "docs"}));
    server.create_bucket(json!({"name": "vectors", "type": "VECTOR"}));
    let objects = vec![
        ("avatars", "user1/face.png", noise(3 << 20, 1)),
        ("avatars", "user2/face.png", noise(70_000, 2)),
        ("avatars", "empty.png", Vec::new()),
        ("docs", "a", b"file named a".to_vec()),
        ("docs", "a/b", b"file under a".to_vec()),
        ("docs", "reports/2026/q1 summary (final).txt", b"quarterly text ".repeat(5000)),
        ("docs", "unicod\u{e9}/\u{65e5}\u{672c}.txt", "\u{65e5}\u{672c}".as_bytes().to_vec()),
    ];
    for (b, n, data) in &objects {
        let ct = if n.ends_with(".png") { "image/png" } else { "text/plain" };
        let meta = (n == &"user1/face.png").then(|| json!({"owner_note": "profile photo", "n": 1}));
        server.upload(b, n, data, ct, meta);
    }
    objects
}

#[test]
fn storage_backup_round_trips_objects_and_metadata_and_is_incremental() {
    let server = StorageServer::start("");
    let objects = seed(&server);
    let env = Env::new();
    let r = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok();
    let first = r.json();
    assert_eq!(first["objects"], objects.len());
    assert_eq!(first["objects_downloaded"], objects.len());
    assert!(r.stderr.contains("vectors") && r.stderr.contains("VECTOR"), "non-standard bucket reported: {}", r.stderr);

    for (b, n, data) in &objects {
        let path = match *n {
            "a" => format!("storage/{b}/a%"),
            _ => format!("storage/{b}/{n}"),
        };
        let got = env.snap(&["dump", "latest", &path]).ok().raw_stdout;
        assert!(got == *data, "{b}/{n}: bytes differ");
    }
    // Metadata of objects and buckets.
    let ls = env.snap(&["ls", "latest", "storage", "--json"]).ok().json();
    let rows = ls.as_array().unwrap();
    let face = rows.iter().find(|r| r["path"] == "/storage/avatars/user1/face.png").unwrap();
    let attrs = &face["attrs"];
    assert_eq!(attrs["content_type"], "image/png");
    assert_eq!(attrs["cache_control"], "max-age=3600");
    assert_eq!(attrs["user_metadata"]["owner_note"], "profile photo");
    assert_eq!(attrs["size"], 3 << 20);
    assert_eq!(attrs["blake3"], blake3::hash(&objects[0].2).to_hex().as_str());
    assert!(attrs["etag"].is_string() && attrs["version"].is_string() && attrs["last_modified"].is_string());
    let bucket = rows.iter().find(|r| r["path"] == "/storage/avatars").unwrap();
    assert_eq!(bucket["attrs"]["bucket"]["public"], true);
    assert_eq!(bucket["attrs"]["bucket"]["file_size_limit"], 10_000_000);
    assert_eq!(bucket["attrs"]["bucket"]["allowed_mime_types"][0], "image/png");
    let show = env.snap(&["show", "latest", "--json"]).ok().json();
    assert_eq!(show["extra"]["storage"]["skipped_buckets"][0]["id"], "vectors");

    // Unchanged: nothing downloaded, almost nothing added.
    let second = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
    assert_eq!(second["objects_downloaded"], 0, "{second}");
    assert_eq!(second["objects_reused"], objects.len());
    assert!(second["bytes_added"].as_u64().unwrap() < 20_000, "{second}");

    // One object replaced, one deleted, one added: only the new bytes move.
    server.upload("avatars", "user2/face.png", &noise(70_000, 9), "image/png", None);
    server.delete("docs", "a/b");
    server.upload("docs", "new.txt", b"new", "text/plain", None);
    let third = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
    assert_eq!(third["objects_downloaded"], 2, "{third}");
    assert_eq!(third["objects"], objects.len());
    assert_eq!(env.snap(&["dump", "latest", "storage/avatars/user2/face.png"]).ok().raw_stdout, noise(70_000, 9));
    env.snap(&["check", "--read-data"]).ok();
}

#[test]
fn transient_faults_are_retried_and_resets_resume() {
    // 503s, a 429, a dropped listing and downloads cut half way: all retried.
    let server =
        StorageServer::start("list:503,list:429,info:500,download:503,download:reset,download:reset,bucket:502");
    let objects = seed(&server);
    let env = Env::new();
    let out = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
    assert_eq!(out["objects_downloaded"], objects.len(), "{out}");
    assert!(out["storage_retries"].as_u64().unwrap() >= 2, "the two cut downloads resumed: {out}");
    for (b, n, data) in objects.iter().filter(|(_, n, _)| n.ends_with(".png")) {
        assert!(env.snap(&["dump", "latest", &format!("storage/{b}/{n}")]).ok().raw_stdout == *data, "{n}");
    }
    env.snap(&["check", "--read-data"]).ok();
}

#[test]
fn bad_key_and_missing_settings_fail_cleanly() {
    let server = StorageServer::start("");
    seed(&server);
    let env = Env::new();
    let wrong = "definitely-not-the-service-key-123";
    let r = run(&env, &server, wrong, &["create", "--only", "storage"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("403") && r.stderr.contains("service role key"), "{}", r.stderr);
    assert!(!r.stderr.contains(wrong) && !r.stdout.contains(wrong), "key leaked: {}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);

    let mut c = env.command(&["create", "--only", "storage"]);
    c.env_remove("SUPABASE_URL").env_remove("SUPABASE_STORAGE_URL").env("SUPABASE_SERVICE_ROLE_KEY", wrong);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SUPABASE_URL"));
    assert!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().is_empty());
}

#[test]
fn deleted_objects_are_noted_and_failures_name_the_object() {
    // A download refused for good fails the backup, naming the object.
    let server = StorageServer::start("download:403");
    let objects = seed(&server);
    let env = Env::new();
    let r = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--allow-partial") && r.stderr.contains("403"), "{}", r.stderr);
    assert!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().is_empty(), "no snapshot on failure");

    // With --allow-partial the snapshot is kept, lists the object, and the exit code says partial.
    let server = StorageServer::start("download:403");
    seed(&server);
    let r = run(&env, &server, &server.key, &["create", "--only", "storage", "--json", "--allow-partial"]);
    assert_eq!(r.code, 3, "partial exit code: {}", r.stderr);
    let out = r.json();
    assert_eq!(out["objects_missing"], 1, "{out}");
    assert_eq!(out["objects"], objects.len() - 1);
    let show = env.snap(&["show", "latest", "--json"]).ok().json();
    let missing = &show["extra"]["storage"]["missing"];
    assert_eq!(missing.as_array().unwrap().len(), 1);
    assert!(missing[0]["object"].as_str().unwrap().contains('/'));

    // An object gone (404) between listing and reading is noted, not a failure.
    let server = StorageServer::start("info:404");
    seed(&server);
    let env = Env::new();
    let out = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
    assert_eq!(out["objects_deleted_during_backup"], 1, "{out}");
    assert_eq!(out["objects"], objects.len() - 1);
}

#[test]
fn older_servers_without_list_v2_are_listed_with_v1() {
    let server = StorageServer::start("no-list-v2");
    let objects = seed(&server);
    let env = Env::new();
    let out = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
    assert_eq!(out["objects"], objects.len(), "{out}");
    let got = env.snap(&["dump", "latest", "storage/docs/reports/2026/q1 summary (final).txt"]).ok().raw_stdout;
    assert_eq!(got, objects[5].2);
}

#[test]
fn two_backups_of_one_project_do_not_race() {
    // Slow downloads keep the first backup running while the second starts.
    let server = StorageServer::start("download:slow,download:slow,download:slow");
    seed(&server);
    let env = Env::new();
    let mut first = env.command(&["create", "--only", "storage"]);
    first
        .env("SUPABASE_STORAGE_URL", server.url())
        .env("SUPABASE_SERVICE_ROLE_KEY", &server.key)
        .env_remove("SUPABASE_URL")
        .env_remove("SUPABASE_DB_URL")
        .env("SNAP_HTTP_READ_TIMEOUT", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut first = first.spawn().unwrap();
    env.wait_for_file("locks");
    let r = run(&env, &server, &server.key, &["create", "--only", "storage", "--lock-wait", "0"]);
    assert_eq!(r.code, 12, "{}", r.stderr);
    assert!(r.stderr.contains("create of"), "{}", r.stderr);
    // Waiting instead, it runs once the first is done.
    run(&env, &server, &server.key, &["create", "--only", "storage", "--lock-wait", "300"]).ok();
    assert!(first.wait().unwrap().success());
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 2);
}

#[test]
fn large_buckets_are_listed_page_by_page() {
    // More objects than one list page (1000) in one folder: list-v2 follows
    // its cursor, and list v1 (older servers) its offset.
    for faults in ["", "no-list-v2"] {
        let server = StorageServer::start(faults);
        server.create_bucket(json!({"name": "many"}));
        for i in 0..1205 {
            server.upload("many", &format!("f/{i:05}.txt"), format!("object {i}").as_bytes(), "text/plain", None);
        }
        let env = Env::new();
        let out = run(&env, &server, &server.key, &["create", "--only", "storage", "--json"]).ok().json();
        assert_eq!(out["objects"], 1205, "{faults}: {out}");
        let got = env.snap(&["dump", "latest", "storage/many/f/01204.txt"]).ok().raw_stdout;
        assert_eq!(got, b"object 1204");
    }
}
