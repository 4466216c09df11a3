//! End-to-end tests of the repository engine through the `snap` binary.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{assert_same_tree, flip_byte, noise, Env};

fn sample_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("docs/deep")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("random.bin"), noise(3_000_000, 1)).unwrap();
    fs::write(src.join("docs/text.txt"), "line of text\n".repeat(50_000)).unwrap();
    fs::write(src.join("docs/deep/zero"), b"").unwrap();
    fs::write(src.join("docs/deep/script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(src.join("docs/deep/script.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("docs/text.txt", src.join("link")).unwrap();
    fs::write(src.join("caf\u{e9} \u{1F600}.txt"), b"unicode name").unwrap();
    src
}

#[test]
fn paths_round_trip_byte_identical_with_metadata() {
    let env = Env::new();
    let src = sample_tree(&env);
    let created = env.create(&[src.to_str().unwrap(), "--tag", "first"]);
    for key in ["snapshot_id", "bytes_read", "bytes_added", "chunks_total", "chunks_new", "duration_s"] {
        assert!(created.get(key).is_some(), "missing {key} in {created}");
    }
    assert_eq!(created["files"], 5);
    assert_eq!(created["bytes_read"].as_u64().unwrap(), 3_000_000 + 650_000 + 18 + 12);

    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    assert_eq!(snaps[0]["tags"][0], "first");
    assert_eq!(snaps[0]["id"], created["snapshot_id"]);

    let id = created["snapshot_id"].as_str().unwrap();
    env.snap(&["restore", &id[..8], "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/src"));

    // ls, dump and the `latest` alias.
    let ls = env.snap(&["ls", "latest", "/src/docs", "--json"]).ok().json();
    let paths: Vec<&str> = ls.as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/src/docs/deep", "/src/docs/deep/script.sh", "/src/docs/deep/zero", "/src/docs/text.txt"]);
    let dumped = env.snap(&["dump", "latest", "/src/random.bin"]).ok();
    assert!(dumped.raw_stdout == noise(3_000_000, 1));

    env.snap(&["check", "--read-data"]).ok();
}

/// Files are read several at a time but must land in the tree in walk
/// order, each with its own contents; what is not a file, directory or
/// symlink is reported and left out.
#[test]
fn many_files_read_at_once_keep_their_order_and_contents() {
    let env = Env::new();
    let src = env.path("many");
    for i in 0..300u64 {
        let dir = src.join(format!("d{}", i % 7)).join(format!("e{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        let len = (i * 7919) % 300_000;
        let body =
            if i % 2 == 0 { noise(len as usize, i) } else { format!("file {i}\n").repeat(len as usize / 8).into() };
        fs::write(dir.join(format!("f{i:03}")), body).unwrap();
    }
    let special = env.path("special");
    fs::create_dir_all(&special).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(special.join("pipe")).status().unwrap().success());
    let out = env.snap(&["create", "--json", src.to_str().unwrap(), special.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("pipe: skipped"), "{}", out.stderr);
    let created = out.json();
    assert_eq!(created["files"], 300);

    let ls = env.snap(&["ls", "latest", "/many/d3/e1", "--json"]).ok().json();
    let names: Vec<&str> = ls.as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.len() >= 14, "{names:?}");
    env.snap(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/many"));
}

/// A second backup of the same paths takes unchanged files from the first
/// unread; a file rewritten with its size and mtime put back is still
/// read, since its ctime moved; `--force` reads everything.
#[test]
fn unchanged_files_are_taken_from_the_parent_snapshot() {
    let env = Env::new();
    let src = env.path("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20u64 {
        fs::write(src.join("sub").join(format!("f{i}")), noise(20_000 + i as usize * 1000, i)).unwrap();
    }
    fs::write(src.join("same-size"), b"version one").unwrap();
    // Files changed in the last two seconds are never vouched for.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let arg = src.to_str().unwrap();
    let first = env.create(&[arg]);
    assert_eq!(first["files_unchanged"], 0);
    let second = env.snap(&["create", "--json", arg]).ok();
    assert!(second.stderr.contains("taken from it unread"), "{}", second.stderr);
    let second = second.json();
    assert_eq!(second["files_unchanged"], 21);
    assert_eq!(second["chunks_total"], 0);

    let file = src.join("same-size");
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    fs::write(&file, b"version two").unwrap();
    fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let third = env.create(&[arg]);
    assert_eq!(third["files_unchanged"], 20);
    let out = env.snap(&["dump", third["snapshot_id"].as_str().unwrap(), "/tree/same-size"]).ok();
    assert_eq!(out.raw_stdout, b"version two");

    let forced = env.create(&["--force", arg]);
    assert_eq!(forced["files_unchanged"], 0);
    // Another set of paths has no parent unless one is named.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    let alone = env.create(&[arg, other.to_str().unwrap()]);
    assert_eq!(alone["files_unchanged"], 0);
    let named = env.create(&["--parent", forced["snapshot_id"].as_str().unwrap(), arg, other.to_str().unwrap()]);
    assert_eq!(named["files_unchanged"], 21);
    env.snap(&["restore", "latest", "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/tree"));
    env.snap(&["check", "--read-data"]).ok();
}

/// `forget --prune` removes the snapshot and gives back its space in one run.
#[test]
fn forget_with_prune_gives_back_the_space() {
    let env = Env::new();
    let first = env.snap_stdin(&["create", "--json", "--stdin", "a.bin"], &noise(2_000_000, 21)).ok().json();
    env.snap_stdin(&["create", "--json", "--stdin", "b.bin"], &noise(1_000_000, 22)).ok();
    let id = first["snapshot_id"].as_str().unwrap();
    let dry = env.snap(&["forget", "--prune", "--dry-run", "--json", id]).ok().json();
    assert!(dry["prune"]["bytes_unused"].as_u64().unwrap() >= 2_000_000, "{dry}");
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 2);
    let done = env.snap(&["forget", "--prune", "--json", id]).ok().json();
    assert_eq!(done["removed"], 1);
    assert!(done["prune"]["bytes_deleted"].as_u64().unwrap() >= 2_000_000, "{done}");
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 1);
    env.snap(&["check", "--read-data"]).ok();
}

#[test]
fn stdin_and_command_streams() {
    let env = Env::new();
    let data = noise(2_500_000, 7);
    let c = env.snap_stdin(&["create", "--json", "--stdin", "dump.sql"], &data).ok().json();
    assert_eq!(c["bytes_read"].as_u64().unwrap(), data.len() as u64);
    let out = env.snap(&["dump", "latest", "dump.sql"]).ok();
    assert!(out.raw_stdout == data);

    let c = env.create(&["--stdin-from-command", "seq.txt", "--", "seq", "1", "100000"]);
    let out = env.snap(&["dump", c["snapshot_id"].as_str().unwrap(), "seq.txt"]).ok();
    let expected: String = (1..=100000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.stdout, expected);

    // A failing command writes no snapshot.
    env.snap(&["create", "--stdin-from-command", "x", "--", "sh", "-c", "echo partial; exit 3"])
        .fails_with(1, "no snapshot was written");
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 2);
    env.snap(&["check"]).ok();
}

#[test]
fn second_backup_of_slightly_changed_data_adds_little() {
    let env = Env::new();
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    // Large enough that the worst case (three changed chunks of the 4 MiB
    // maximum: the changed one split in two, and the last) stays under a fifth.
    let mut big = noise(72_000_000, 3);
    fs::write(src.join("big.bin"), &big).unwrap();
    let first = env.create(&[src.to_str().unwrap()]);
    // Change 100 bytes in the middle and append a little.
    for b in &mut big[36_000_000..36_000_100] {
        *b ^= 0xff;
    }
    big.extend_from_slice(b"tail");
    fs::write(src.join("big.bin"), &big).unwrap();
    let second = env.create(&[src.to_str().unwrap()]);
    let a = first["bytes_added"].as_u64().unwrap();
    let b = second["bytes_added"].as_u64().unwrap();
    assert!(a > 72_000_000, "first added {a}");
    assert!(b < a / 5, "second added {b} of {a}");
    assert!(second["chunks_new"].as_u64().unwrap() <= 4, "{second}");

    // Unchanged data adds nothing but a snapshot.
    let third = env.create(&[src.to_str().unwrap()]);
    assert_eq!(third["chunks_new"], 0);
    assert!(third["bytes_added"].as_u64().unwrap() < 2_000, "{third}");
    // Read again (cut on two threads, as large files already stored are),
    // it is cut exactly as before.
    let forced = env.create(&[src.to_str().unwrap(), "--force"]);
    assert_eq!(forced["chunks_new"], 0, "{forced}");
    assert_eq!(forced["chunks_total"], second["chunks_total"], "{forced}");

    let diff = env.snap(&["diff", &first["snapshot_id"].as_str().unwrap()[..10], "latest", "--json"]).ok().json();
    assert_eq!(diff.as_array().unwrap().len(), 1);
    assert_eq!(diff[0]["path"], "/data/big.bin");
    assert_eq!(diff[0]["change"], "modified");
    env.snap(&["check", "--read-data"]).ok();
}

#[test]
fn excludes_and_includes() {
    let env = Env::new();
    let src = sample_tree(&env);
    fs::write(src.join("docs/skip.log"), b"noise").unwrap();
    let c =
        env.create(&[src.to_str().unwrap(), "--exclude", "*.log", "--exclude", &format!("{}/empty", src.display())]);
    let id = c["snapshot_id"].as_str().unwrap();
    let ls = env.snap(&["ls", id, "--json"]).ok().stdout;
    assert!(!ls.contains("skip.log") && !ls.contains("/src/empty"), "{ls}");
    env.snap(&["restore", id, "--target", env.path("part").to_str().unwrap(), "--include", "src/docs/deep"]).ok();
    assert!(env.path("part/src/docs/deep/script.sh").exists());
    assert!(!env.path("part/src/random.bin").exists());
    assert!(!env.path("part/src/docs/text.txt").exists());
}

#[test]
fn bad_input_gets_one_line_errors_and_exit_codes() {
    let env = Env::new();
    env.create(&["--stdin-from-command", "a", "--", "echo", "a"]);
    let wrong = env.command(&["snapshots"]).env("SNAP_PASSWORD", "wrong").output().unwrap();
    assert_eq!(wrong.status.code(), Some(11));
    let msg = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(msg.contains("wrong password") && !msg.contains("correct horse"));

    env.snap(&["restore", "abcdef12", "--target", "x"]).fails_with(14, "no snapshot matches");
    env.snap(&["dump", "latest", "nope"]).fails_with(14, "nope is not in the snapshot");
    env.snap(&["ls", "abc"]).fails_with(2, "at least 6 hex digits");
    env.snap(&["create", env.path("missing").to_str().unwrap()]).fails_with(1, "missing");

    let other = Env::empty();
    other.snap(&["snapshots"]).fails_with(10, "no repository at");
    let no_pw = other.command(&["init"]).env_remove("SNAP_PASSWORD").output().unwrap();
    assert_eq!(no_pw.status.code(), Some(2));
    env.snap(&["init", "--kdf-iterations", "1"]).fails_with(1, "already exists");
    let no_pw = env.command(&["snapshots"]).env_remove("SNAP_PASSWORD").output().unwrap();
    assert_eq!(no_pw.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_pw.stderr).contains("SNAP_PASSWORD_FILE"));
}

#[test]
fn password_sources() {
    let env = Env::new();
    fs::write(env.path("pw"), "correct horse\n").unwrap();
    let out = env
        .command(&["snapshots", "--json"])
        .env_remove("SNAP_PASSWORD")
        .env("SNAP_PASSWORD_FILE", env.path("pw"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = env
        .command(&["snapshots", "--json"])
        .env_remove("SNAP_PASSWORD")
        .env("SNAP_PASSWORD_COMMAND", "printf 'correct horse'")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn keys_add_list_passwd_remove_export() {
    let env = Env::new();
    env.create(&["--stdin-from-command", "a", "--", "echo", "hello"]);
    let add = env
        .command(&["key", "add", "--kdf-memory", "256", "--kdf-iterations", "1", "--json"])
        .env("SNAP_NEW_PASSWORD", "second pw")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let keys = env.snap(&["key", "list", "--json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let current: Vec<_> = keys.as_array().unwrap().iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1);

    // The second password opens the repository too.
    assert!(env.command(&["snapshots"]).env("SNAP_PASSWORD", "second pw").output().unwrap().status.success());

    // Refuse to remove the key in use.
    let cur = current[0]["id"].as_str().unwrap();
    env.snap(&["key", "remove", &cur[..8]]).fails_with(2, "refusing");

    // passwd replaces the current key.
    let p = env
        .command(&["key", "passwd", "--kdf-memory", "256", "--kdf-iterations", "1"])
        .env("SNAP_NEW_PASSWORD", "third pw")
        .output()
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    env.snap(&["snapshots"]).fails_with(11, "wrong password");
    assert!(env.command(&["snapshots"]).env("SNAP_PASSWORD", "third pw").output().unwrap().status.success());

    // Export the master key; with every password gone it still opens the repository.
    let export = env.command(&["key", "export"]).env("SNAP_PASSWORD", "third pw").output().unwrap();
    let text = String::from_utf8(export.stdout).unwrap();
    assert!(text.starts_with("snap-master-key-v1 "));
    fs::write(env.path("master.txt"), &text).unwrap();
    for k in env.files_of("keys") {
        fs::remove_file(k).unwrap();
    }
    env.snap(&["snapshots"]).fails_with(2, "no usable key file");
    let out = env
        .command(&["dump", "latest", "a"])
        .env_remove("SNAP_PASSWORD")
        .env("SNAP_MASTER_KEY_FILE", env.path("master.txt"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    // ...and a new password can be set with it.
    let add = env
        .command(&["key", "add", "--kdf-memory", "256", "--kdf-iterations", "1"])
        .env("SNAP_MASTER_KEY_FILE", env.path("master.txt"))
        .env("SNAP_NEW_PASSWORD", "fresh")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    assert!(env.command(&["snapshots"]).env("SNAP_PASSWORD", "fresh").output().unwrap().status.success());
}

#[test]
fn nothing_in_the_repository_is_readable_without_the_key() {
    let env = Env::new();
    let marker = b"VERY-RECOGNISABLE-PLAINTEXT-MARKER ".repeat(1000);
    env.snap_stdin(&["create", "--stdin", "secret-file-name.txt", "--host", "secret-host-name"], &marker).ok();
    for f in walkdir::WalkDir::new(&env.repo).into_iter().filter_map(|e| e.ok()).filter(|e| e.file_type().is_file()) {
        let bytes = fs::read(f.path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for needle in ["VERY-RECOGNISABLE", "secret-file-name", "secret-host-name", "correct horse"] {
            assert!(!text.contains(needle), "{needle} readable in {}", f.path().display());
        }
    }
}

#[test]
fn damage_is_reported_and_only_affected_restores_fail() {
    let env = Env::new();
    let a = env.path("a");
    let b = env.path("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("a.bin"), noise(2_000_000, 11)).unwrap();
    let sa = env.create(&[a.to_str().unwrap()]);
    let packs_before = env.files_of("data");
    fs::write(b.join("b.bin"), noise(2_000_000, 12)).unwrap();
    let sb = env.create(&[b.to_str().unwrap()]);
    let new_packs: Vec<_> = env.files_of("data").into_iter().filter(|p| !packs_before.contains(p)).collect();
    let b_data_pack = new_packs.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();

    // A flipped byte inside b's data.
    flip_byte(b_data_pack, 1000);
    let check = env.snap(&["check", "--read-data", "--json"]);
    assert_eq!(check.code, 13, "{}", check.stderr);
    let report = check.json();
    let objects: Vec<&str> =
        report["problems"].as_array().unwrap().iter().map(|p| p["object"].as_str().unwrap()).collect();
    let pack_name = b_data_pack.file_name().unwrap().to_str().unwrap();
    assert!(objects.iter().all(|o| o.contains(pack_name)), "{objects:?}");
    // Structure-only check cannot see a flipped data byte; that is what --read-data is for.
    env.snap(&["check"]).ok();

    let sa_id = sa["snapshot_id"].as_str().unwrap();
    let sb_id = sb["snapshot_id"].as_str().unwrap();
    env.snap(&["restore", sa_id, "--target", env.path("ra").to_str().unwrap()]).ok();
    assert!(fs::read(env.path("ra/a/a.bin")).unwrap() == noise(2_000_000, 11));
    env.snap(&["restore", sb_id, "--target", env.path("rb").to_str().unwrap()]).fails_with(13, "b/b.bin");
    assert!(!env.path("rb/b/b.bin").exists(), "a damaged file must not be left half-written");
    env.snap(&["dump", sb_id, "b/b.bin"]).fails_with(13, "authentication failed");
}

#[test]
fn damaged_index_is_reported_and_repaired() {
    let env = Env::new();
    let src = sample_tree(&env);
    let c = env.create(&[src.to_str().unwrap()]);
    let index = env.files_of("index");
    assert_eq!(index.len(), 1);
    flip_byte(&index[0], 40);
    env.snap(&["check"]).fails_with(13, "problem");
    let report = env.snap(&["check", "--json"]).json();
    assert!(report["problems"][0]["object"].as_str().unwrap().starts_with("index/"));
    env.snap(&["restore", "latest", "--target", "x"]).fails_with(13, "index/");
    env.snap(&["repair", "index"]).ok();
    env.snap(&["check", "--read-data"]).ok();
    env.snap(&["restore", c["snapshot_id"].as_str().unwrap(), "--target", env.path("out").to_str().unwrap()]).ok();
    assert_same_tree(&src, &env.path("out/src"));

    // A missing index file is also recovered by repair.
    for f in env.files_of("index") {
        fs::remove_file(f).unwrap();
    }
    env.snap(&["check"]).fails_with(13, "problem");
    env.snap(&["repair", "index"]).ok();
    env.snap(&["check", "--read-data"]).ok();
}

#[test]
fn damaged_snapshot_file_only_affects_that_snapshot() {
    let env = Env::new();
    let one = env.create(&["--stdin-from-command", "one", "--", "echo", "one"]);
    let two = env.create(&["--stdin-from-command", "two", "--", "echo", "two"]);
    let path = env.repo.join("snapshots").join(two["snapshot_id"].as_str().unwrap());
    flip_byte(&path, 50);
    let list = env.snap(&["snapshots", "--json"]);
    assert_eq!(list.code, 13);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert!(list.stderr.contains("cannot be read"));
    let report = env.snap(&["check", "--json"]).json();
    assert!(report["problems"][0]["object"].as_str().unwrap().starts_with("snapshots/"));
    env.snap(&["dump", two["snapshot_id"].as_str().unwrap(), "two"]).fails_with(13, "snapshots/");
    assert_eq!(env.snap(&["dump", one["snapshot_id"].as_str().unwrap(), "one"]).ok().stdout, "one\n");
}

#[test]
fn missing_pack_is_reported_by_check() {
    let env = Env::new();
    let src = sample_tree(&env);
    env.create(&[src.to_str().unwrap()]);
    let pack = env.files_of("data").into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap();
    fs::remove_file(&pack).unwrap();
    let run = env.snap(&["check", "--json"]);
    assert_eq!(run.code, 13);
    let text = run.stdout;
    assert!(text.contains("missing") && text.contains(pack.file_name().unwrap().to_str().unwrap()), "{text}");
    env.snap(&["restore", "latest", "--target", env.path("o").to_str().unwrap()])
        .fails_with(13, "could not be restored");
}

#[test]
fn killed_create_leaves_no_snapshot_and_a_valid_repository() {
    let env = Env::new();
    let mut child =
        env.spawn(&["create", "--stdin-from-command", "endless", "--", "sh", "-c", "head -c 400000000 /dev/urandom"]);
    // Wait until at least one pack is durable, then kill without warning.
    env.wait_for_file("data");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.files_of("snapshots").is_empty());
    let report = env.snap(&["check", "--read-data", "--json"]).ok().json();
    assert!(report["problems"].as_array().unwrap().is_empty());
    // The next create works (the dead process's lock is recognised as stale).
    env.create(&["--stdin-from-command", "x", "--", "echo", "x"]);
    env.snap(&["check"]).ok();
}

#[test]
fn exclusive_lock_blocks_then_unlock_clears_stale_locks() {
    let env = Env::new();
    // Hold an exclusive lock from a live helper process: `repair index` waits
    // on a shared lock we plant by running a slow create.
    let mut slow = env.spawn(&["create", "--stdin-from-command", "slow", "--", "sh", "-c", "sleep 8; echo done"]);
    env.wait_for_file("locks");
    env.snap(&["repair", "index", "--lock-wait", "1"]).fails_with(12, "locked");
    // A second create shares the lock and runs alongside.
    env.create(&["--stdin-from-command", "b", "--", "echo", "b"]);
    assert!(slow.wait().unwrap().success());
    // Now nothing holds a lock, and the exclusive command proceeds.
    env.snap(&["repair", "index", "--lock-wait", "5"]).ok();

    // A lock left by a killed process is stale: unlock removes it.
    let mut victim = env.spawn(&["create", "--stdin-from-command", "v", "--", "sleep", "30"]);
    env.wait_for_file("locks");
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(env.files_of("locks").len(), 1);
    let out = env.snap(&["unlock", "--json"]).ok().json();
    assert_eq!(out["removed"].as_array().unwrap().len(), 1);
    assert!(env.files_of("locks").is_empty());
}

#[test]
fn default_kdf_is_tuned_and_stored_in_the_key_file() {
    let env = Env::empty();
    env.snap(&["init"]).ok();
    let key = &env.files_of("keys")[0];
    let kf: serde_json::Value = serde_json::from_slice(&fs::read(key).unwrap()).unwrap();
    assert_eq!(kf["kdf"], "argon2id");
    assert_eq!(kf["memory_kib"], 65536);
    assert!(kf["iterations"].as_u64().unwrap() >= 1);
    env.snap(&["snapshots"]).ok();
}

#[test]
fn forget_applies_keep_rules_and_names_them() {
    let env = Env::new();
    // Backdated daily snapshots across a month end, two on the last day.
    let times = [
        "2026-01-29 10:00:00",
        "2026-01-30 10:00:00",
        "2026-01-31 09:00:00",
        "2026-01-31 18:00:00",
        "2026-02-01 10:00:00",
        "2026-02-02 10:00:00",
    ];
    let mut ids = Vec::new();
    for t in times {
        let out = env.snap_stdin(&["create", "--stdin", "f", "--time", t, "--json"], t.as_bytes()).ok().json();
        ids.push(out["snapshot_id"].as_str().unwrap().to_string());
    }
    env.snap(&["forget"]).fails_with(2, "no keep rule");
    let plan = env.snap(&["forget", "--keep-daily", "2", "--keep-monthly", "2", "--dry-run", "--json"]).ok().json();
    let kept: Vec<String> = plan["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["keep"] == true)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    // Daily: Feb 2, Feb 1; monthly: February's newest (Feb 2), January's newest (Jan 31 18:00).
    let expect: std::collections::BTreeSet<String> = [&ids[5], &ids[4], &ids[3]].into_iter().cloned().collect();
    assert_eq!(kept.into_iter().collect::<std::collections::BTreeSet<_>>(), expect);
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 6, "dry run removes nothing");
    let out = env.snap(&["forget", "--keep-daily", "2", "--keep-monthly", "2"]).ok();
    assert!(out.stdout.contains("monthly") && out.stdout.contains("removed 3"), "{}", out.stdout);
    assert_eq!(env.snap(&["snapshots", "--json"]).ok().json().as_array().unwrap().len(), 3);
    // By name; the rest still restore.
    env.snap(&["forget", &ids[4][..8]]).ok();
    assert_eq!(env.snap(&["dump", &ids[5][..8], "f"]).ok().stdout, times[5]);
    env.snap(&["check", "--read-data"]).ok();
}
