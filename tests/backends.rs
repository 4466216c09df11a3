//! The repository suite on both backends (a local directory and a real
//! S3-compatible server on loopback), S3 under injected faults, the
//! metadata cache, `snap copy`, and append-only keys.

mod common;

use std::fs;

use common::{assert_same_tree, noise, Env, Run};
use snap::testing::s3_server::{Fault, FaultPlan, FaultyProxy, S3TestServer};

fn s3_server(bucket: &str) -> S3TestServer {
    let server = S3TestServer::start().expect("start the S3 test server (moto; scripts/install-deps installs it)");
    server.create_bucket(bucket).unwrap();
    server
}

/// An initialised repository on an S3 server reached through a proxy that
/// injects faults (none until a plan is set) and counts requests.
fn repository_behind_proxy(bucket: &str) -> (S3TestServer, FaultyProxy, Env) {
    let server = s3_server(bucket);
    let proxy = FaultyProxy::start(&server, FaultPlan::default()).unwrap();
    let env = Env::on_s3(&proxy.endpoint(), bucket, "repo");
    env.init();
    (server, proxy, env)
}

fn with_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut c = env.command(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    common::finish(c.output().unwrap())
}

fn source_tree(env: &Env) -> std::path::PathBuf {
    let src = env.tree("src", &[("big.bin", noise(20_000_000, 3)), ("text.txt", b"a row of text\n".repeat(200_000))]);
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/small"), b"small file").unwrap();
    src
}

/// What every backend must do, through the CLI.
fn repository_suite(env: &Env) {
    env.init();
    env.snap(&["init", "--kdf-memory", "256", "--kdf-iterations", "1"]).fails_with(1, "already exists");
    let src = source_tree(env);
    let first = env.create(&[src.to_str().unwrap()]);
    assert_eq!(first["files"], 3);
    let mut text = fs::read(src.join("text.txt")).unwrap();
    text.extend_from_slice(b"one more row\n");
    fs::write(src.join("text.txt"), &text).unwrap();
    let second = env.create(&[src.to_str().unwrap()]);
    assert!(second["bytes_added"].as_u64().unwrap() < 1_500_000, "a small change adds little: {second}");

    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let ls = env.snap(&["ls", "latest", "--json"]).ok().json();
    assert!(ls.as_array().unwrap().iter().any(|r| r["path"] == "/src/sub/small"), "{ls}");
    assert!(env.snap(&["dump", "latest", "/src/big.bin"]).ok().raw_stdout == noise(20_000_000, 3));
    env.snap(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/src"));

    let stream = noise(3_000_000, 9);
    env.snap_stdin(&["create", "--stdin", "dump.sql"], &stream).ok();
    assert!(env.snap(&["dump", "latest", "dump.sql"]).ok().raw_stdout == stream);
    env.snap(&["check", "--read-data"]).ok();
    env.snap(&["stats"]).ok();

    with_env(env, &["key", "add", "--kdf-memory", "256", "--kdf-iterations", "1"], &[("SNAP_NEW_PASSWORD", "second")])
        .ok();
    with_env(env, &["snapshots"], &[("SNAP_PASSWORD", "second")]).ok();
    with_env(env, &["snapshots"], &[("SNAP_PASSWORD", "wrong")]).fails_with(11, "wrong password");

    // Forget the first snapshot, give its space back, and lose nothing kept.
    let first_id = first["snapshot_id"].as_str().unwrap();
    env.snap(&["forget", &first_id[..8]]).ok();
    env.snap(&["prune", "--no-forget", "--max-unused", "0%"]).ok();
    env.snap(&["check", "--read-data"]).ok();
    env.snap(&["restore", second["snapshot_id"].as_str().unwrap(), "--target", env.path("out2").to_str().unwrap()])
        .ok();
    assert_same_tree(&src, &env.path("out2/src"));
    env.snap(&["unlock"]).ok();
}

#[test]
fn repository_suite_on_a_local_directory() {
    repository_suite(&Env::empty());
}

#[test]
fn repository_suite_on_s3() {
    let server = s3_server("suite");
    let env = Env::on_s3(&server.endpoint(), "suite", "team/snap");
    repository_suite(&env);
    // A second repository under another prefix of the same bucket is separate.
    let other = Env::on_s3(&server.endpoint(), "suite", "team/other");
    other.init();
    assert_eq!(other.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 0);
}

#[test]
fn s3_errors_are_one_line() {
    let server = s3_server("errors");
    let missing = Env::on_s3(&server.endpoint(), "errors", "nothing-here");
    missing.snap(&["snapshots"]).fails_with(10, "no repository at s3:");
    let no_bucket = Env::on_s3(&server.endpoint(), "no-such-bucket", "r");
    let run = no_bucket.snap(&["init", "--kdf-memory", "256", "--kdf-iterations", "1"]).fails_with(1, "NoSuchBucket");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains("snap-test-secret"));
    let nobody = Env::on_s3("http://127.0.0.1:9", "b", "r");
    let run = with_env(&nobody, &["snapshots"], &[("SNAP_S3_RETRIES", "1")]);
    assert_ne!(run.code, 0);
    assert!(!run.stderr.contains("panicked") && run.stderr.trim().lines().count() == 1, "{}", run.stderr);
    Env::on_s3("http://127.0.0.1:9", "b", "r")
        .snap(&["--repo", "s3:https://key:secret@host/b", "snapshots"])
        .fails_with(1, "credentials do not belong in the repository location");
}

#[test]
fn s3_faults_mid_upload_and_download_lose_nothing() {
    let (_server, proxy, env) = repository_behind_proxy("faults");
    // 40 MB of new data: multipart uploads of 16 MiB packs, every third
    // PUT throttled, failed or cut off halfway.
    let src = env.tree("src", &[("a.bin", noise(40_000_000, 1)), ("b.txt", b"text\n".repeat(300_000))]);
    proxy.set_plan(FaultPlan {
        every: 3,
        methods: vec!["PUT".into(), "POST".into()],
        faults: vec![Fault::SlowDown, Fault::DropMidUpload, Fault::InternalError],
        ..FaultPlan::default()
    });
    let created = env.create(&[src.to_str().unwrap()]);
    assert!(proxy.faults_injected() >= 3, "faults injected: {}", proxy.faults_injected());
    // Reads fail too: downloads cut off halfway, throttling.
    proxy.set_plan(FaultPlan {
        every: 4,
        methods: vec!["GET".into()],
        faults: vec![Fault::DropMidDownload, Fault::SlowDown],
        ..FaultPlan::default()
    });
    env.snap(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/src"));

    // A store that fails every write: the backup fails with one line and
    // leaves no snapshot behind; what was kept before is intact.
    proxy.set_plan(FaultPlan {
        every: 1,
        methods: vec!["PUT".into()],
        path: Some("/data/".into()),
        faults: vec![Fault::InternalError],
        ..FaultPlan::default()
    });
    fs::write(src.join("c.bin"), noise(5_000_000, 2)).unwrap();
    let run = with_env(&env, &["create", src.to_str().unwrap()], &[("SNAP_S3_RETRIES", "2")]);
    assert_ne!(run.code, 0);
    assert!(!run.stderr.contains("panicked") && run.stderr.contains("InternalError"), "{}", run.stderr);
    proxy.set_plan(FaultPlan::default());
    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["id"], created["snapshot_id"]);
    env.snap(&["unlock", "--remove-all"]).ok();
    env.snap(&["check", "--read-data"]).ok();
    fs::remove_file(src.join("c.bin")).unwrap();
    env.snap(&["restore", "latest", "--target", env.path("out2").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out2/src"));
}

#[test]
fn metadata_cache_saves_downloads_and_follows_the_repository() {
    let (_server, proxy, env) = repository_behind_proxy("cache");
    let src = source_tree(&env);
    for _ in 0..3 {
        env.create(&[src.to_str().unwrap()]);
    }
    let get = |kind: &str| proxy.counts().get(&format!("GET {kind}")).copied().unwrap_or(0);
    // The snapshots were written through the cache: listing them reads none.
    proxy.reset_counts();
    env.snap(&["snapshots"]).ok();
    assert_eq!(get("snapshots"), 0, "{:?}", proxy.counts());
    env.snap(&["ls", "latest"]).ok();
    let first_ls = get("data");
    proxy.reset_counts();
    env.snap(&["ls", "latest"]).ok();
    assert_eq!((get("data"), get("index")), (0, 0), "second ls downloads nothing: {:?}", proxy.counts());
    assert!(first_ls > 0 || get("data") == 0);

    // Without the cache everything is fetched.
    proxy.reset_counts();
    env.snap(&["--no-cache", "snapshots"]).ok();
    assert_eq!(get("snapshots"), 3);

    // Another host forgets a snapshot: the cache drops it too.
    let other_cache = env.path("other-cache");
    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    let gone = snaps[0]["id"].as_str().unwrap().to_string();
    with_env(&env, &["forget", &gone[..8]], &[("SNAP_CACHE_DIR", other_cache.to_str().unwrap())]).ok();
    let listed = env.snap(&["snapshots", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let cached: Vec<String> = walkdir::WalkDir::new(env.path("cache"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().parent().is_some_and(|p| p.ends_with("snapshots")))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cached.len(), 2, "{cached:?}");
    assert!(!cached.contains(&gone));

    // A damaged cache file is not trusted.
    for e in walkdir::WalkDir::new(env.path("cache")).into_iter().filter_map(|e| e.ok()) {
        if e.file_type().is_file() {
            fs::write(e.path(), b"garbage").unwrap();
        }
    }
    env.snap(&["ls", "latest"]).ok();
    env.snap(&["check"]).ok();
}

#[test]
fn copy_between_repositories_with_different_keys() {
    let server = s3_server("offsite");
    let local = Env::new();
    let offsite = Env::on_s3(&server.endpoint(), "offsite", "copy");
    with_env(&offsite, &["init", "--kdf-memory", "256", "--kdf-iterations", "1"], &[("SNAP_PASSWORD", "other")]).ok();
    let to = offsite.repo.to_str().unwrap().to_string();
    let src = local.tree(
        "src",
        &[("a.bin", noise(6_000_000, 4)), ("b.txt", b"line\n".repeat(100_000)), ("c.bin", noise(2_000_000, 5))],
    );
    let day1 = local.create(&[src.to_str().unwrap(), "--tag", "day1"]);
    fs::write(src.join("c.bin"), noise(2_000_000, 6)).unwrap();
    let day2 = local.create(&[src.to_str().unwrap(), "--tag", "day2"]);

    let copy = |ids: &[&str]| {
        let mut args = vec!["copy", "--json", "--to-repo", &to];
        args.extend_from_slice(ids);
        let mut c = local.command(&args);
        for (k, v) in &offsite.vars {
            c.env(k, v);
        }
        common::finish(c.env("SNAP_TO_PASSWORD", "other").output().unwrap())
    };
    let first = copy(&[day1["snapshot_id"].as_str().unwrap()]).ok().json();
    assert_eq!(first["copied"].as_array().unwrap().len(), 1);
    // Day 2 reads only the file that changed, and stores little beyond it.
    let second = copy(&[]).ok().json();
    assert_eq!(second["copied"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["already_present"].as_array().unwrap().len(), 1);
    let c = &second["copied"][0];
    assert_eq!((c["files_read"].as_u64(), c["files_reused"].as_u64()), (Some(1), Some(2)), "{c}");
    assert!(c["bytes_added"].as_u64().unwrap() < 2_300_000, "{c}");
    // Nothing left to do.
    let third = copy(&[]).ok().json();
    assert_eq!(third["copied"].as_array().unwrap().len(), 0);

    // The copies restore byte for byte, with their original metadata.
    let off = |args: &[&str]| with_env(&offsite, args, &[("SNAP_PASSWORD", "other")]);
    let snaps = off(&["snapshots", "--json"]).ok().json();
    let tags: Vec<&str> = snaps.as_array().unwrap().iter().map(|s| s["tags"][0].as_str().unwrap()).collect();
    assert_eq!(tags, ["day1", "day2"]);
    assert_eq!(snaps[1]["time"], local.snap(&["snapshots", "--json"]).ok().json()[1]["time"]);
    off(&["restore", "latest", "--target", offsite.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &offsite.path("out/src"));
    off(&["check", "--read-data"]).ok();
    // The source key does not open the copy.
    offsite.snap(&["snapshots"]).fails_with(11, "wrong password");
    let _ = day2;

    // The copy's own next backup of the same files deduplicates against the
    // copied data (same chunker, same boundaries).
    let again =
        with_env(&offsite, &["create", "--json", src.to_str().unwrap()], &[("SNAP_PASSWORD", "other")]).ok().json();
    assert!(again["bytes_added"].as_u64().unwrap() < 100_000, "{again}");
}

#[test]
fn append_only_keys_back_up_but_never_delete() {
    let env = Env::new();
    let src = env.tree("src", &[("a", b"first".to_vec())]);
    env.create(&[src.to_str().unwrap()]);
    let added = with_env(
        &env,
        &["key", "add", "--append-only", "--kdf-memory", "256", "--kdf-iterations", "1", "--json"],
        &[("SNAP_NEW_PASSWORD", "backup-host")],
    )
    .ok()
    .json();
    let key_id = added["added"].as_str().unwrap().to_string();
    let host = |args: &[&str]| with_env(&env, args, &[("SNAP_PASSWORD", "backup-host")]);
    host(&["create", src.to_str().unwrap()]).ok();
    host(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]).ok();
    host(&["check"]).ok();
    host(&["forget", "--keep-last", "1"]).fails_with(2, "append-only key");
    host(&["prune", "--keep-last", "1"]).fails_with(2, "append-only key");
    host(&["prune", "--keep-last", "1", "--dry-run"]).ok();
    host(&["policy", "set", "--keep-last", "3"]).fails_with(2, "append-only key");
    host(&["repair", "index"]).fails_with(2, "append-only key");
    host(&["key", "remove", &key_id[..8]]).fails_with(2, "append-only key");
    let full_key = with_env(
        &env,
        &["key", "add", "--kdf-memory", "256", "--kdf-iterations", "1"],
        &[("SNAP_PASSWORD", "backup-host"), ("SNAP_NEW_PASSWORD", "x")],
    );
    full_key.fails_with(2, "append-only key");
    with_env(&env, &["key", "passwd"], &[("SNAP_PASSWORD", "backup-host"), ("SNAP_NEW_PASSWORD", "y")])
        .fails_with(2, "append-only key");
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 2);
    let keys = env.snap(&["key", "list", "--json"]).ok().json();
    assert!(keys.as_array().unwrap().iter().any(|k| k["id"] == key_id.as_str() && k["append_only"] == true));

    // Editing the flag out of the key file does not turn it into a full key.
    let path = env.repo.join("keys").join(&key_id);
    let text = fs::read_to_string(&path).unwrap().replace("\"append_only\": true", "\"append_only\": false");
    fs::write(&path, text).unwrap();
    host(&["snapshots"]).fails_with(11, "wrong password");
    // The full key still does everything.
    env.snap(&["forget", "--keep-last", "1"]).ok();
}
