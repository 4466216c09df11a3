//! `snap forget`, `snap prune` and `snap policy` through the binary:
//! retention decisions, space given back, crashes at every step, and
//! backups running while prune does.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_same_tree, noise, Env};

fn pack_bytes(env: &Env) -> u64 {
    env.files_of("data").iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    let list = env.snap(&["snapshots", "--json"]).ok().json();
    list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// `cp -a`: contents, modes and times, as a restore must reproduce them.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

fn restore_and_compare(env: &Env, id: &str, expected: &Path, name: &str) {
    let out = env.path(&format!("restored-{}", &id[..8]));
    let _ = fs::remove_dir_all(&out);
    env.snap(&["restore", id, "--target", out.to_str().unwrap()]).ok();
    assert_same_tree(expected, &out.join(name));
}

/// Six daily snapshots of `src`: a common 2 MB file, plus one file of
/// 1 MB that changes every day. Returns the snapshot ids, oldest first, and
/// a copy of `src` as it was at each.
fn six_days(env: &Env) -> Vec<(String, std::path::PathBuf)> {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("common.bin"), noise(2_000_000, 99)).unwrap();
    let mut out = Vec::new();
    for day in 1..=6u64 {
        if day > 1 {
            fs::remove_file(src.join(format!("day{}.bin", day - 1))).unwrap();
        }
        fs::write(src.join(format!("day{day}.bin")), noise(1_000_000, day)).unwrap();
        let time = format!("2026-10-{day:02} 12:00:00");
        let c = env.create(&[src.to_str().unwrap(), "--time", &time]);
        let copy = env.path(&format!("expected/day{day}/src"));
        copy_dir(&src, &copy);
        out.push((c["snapshot_id"].as_str().unwrap().to_string(), copy));
    }
    out
}

#[test]
fn prune_applies_the_policy_and_gives_back_the_space() {
    let env = Env::new();
    let days = six_days(&env);
    let before = pack_bytes(&env);

    // No rule, no saved policy: refused, nothing removed.
    env.snap(&["prune"]).fails_with(2, "refusing to remove every snapshot");
    env.snap(&["forget"]).fails_with(2, "refusing to remove every snapshot");
    assert_eq!(snapshot_ids(&env).len(), 6);

    // A dry run names every decision and its rule, and changes nothing.
    let dry = env.snap(&["prune", "--keep-last", "2", "--dry-run", "--json"]).ok().json();
    let decisions = dry["snapshots"].as_array().unwrap();
    assert_eq!(decisions.len(), 6);
    let kept: Vec<&str> = decisions.iter().filter(|d| d["keep"] == true).map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(kept, [days[5].0.as_str(), days[4].0.as_str()]);
    assert!(decisions.iter().filter(|d| d["keep"] == true).all(|d| d["reasons"][0] == "last"));
    let planned_free = dry["prune"]["bytes_deleted"].as_u64().unwrap();
    assert!(planned_free >= 3_000_000, "{dry}");
    assert_eq!(snapshot_ids(&env).len(), 6);
    assert_eq!(pack_bytes(&env), before);

    // A saved policy lets a scheduled prune run without flags.
    env.snap(&["policy", "set", "--keep-daily", "2"]).ok();
    let shown = env.snap(&["policy", "show", "--json"]).ok().json();
    assert_eq!(shown["policy"]["keep"]["daily"], 2);
    assert_eq!(shown["policy"]["group_by"], "host,source");
    let pruned = env.snap(&["prune", "--json"]).ok().json();
    assert_eq!(pruned["forgotten"], 4);
    let ids = snapshot_ids(&env);
    assert_eq!(ids, [days[4].0.clone(), days[5].0.clone()]);

    // What is left: the common file and two daily files, plus metadata.
    let after = pack_bytes(&env);
    assert!(after < before - 3_000_000, "before {before}, after {after}");
    assert!(after >= 4_000_000, "kept data must remain: {after}");
    assert_eq!(pruned["prune"]["bytes_after"].as_u64().unwrap(), after);
    env.snap(&["check", "--read-data"]).ok();
    for (id, expected) in &days[4..] {
        restore_and_compare(&env, id, expected, "src");
    }

    // Nothing left to do on a second run.
    let again = env.snap(&["prune", "--json"]).ok().json();
    assert_eq!(again["forgotten"], 0);
    assert_eq!(again["prune"]["packs_deleted"], 0);
    assert_eq!(again["prune"]["packs_written"], 0);
    assert_eq!(pack_bytes(&env), after);

    env.snap(&["policy", "clear"]).ok();
    env.snap(&["prune"]).fails_with(2, "refusing");
}

/// `src/f00`, `src/f01`, …: `count` files of `size` noise bytes, file `i`
/// seeded with `seed + i`.
fn noise_files(env: &Env, count: u64, size: usize, seed: u64) -> std::path::PathBuf {
    let files: Vec<(String, Vec<u8>)> = (0..count).map(|i| (format!("f{i:02}"), noise(size, seed + i))).collect();
    let named: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    env.tree("src", &named)
}

#[test]
fn partly_used_packs_are_repacked() {
    let env = Env::new();
    // Twenty 400 kB files land in one pack; half of them are then deleted.
    let src = noise_files(&env, 20, 400_000, 1000);
    env.create(&[src.to_str().unwrap()]);
    for i in 10..20 {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    let kept = env.create(&[src.to_str().unwrap()]);
    let id = kept["snapshot_id"].as_str().unwrap().to_string();

    // With the threshold at 100% no pack qualifies for repacking.
    let none = env.snap(&["prune", "--keep-last", "1", "--max-unused", "100%", "--json"]).ok().json();
    assert_eq!(none["prune"]["packs_repack"], 0);
    assert_eq!(none["prune"]["packs_written"], 0);
    let half_used = pack_bytes(&env);
    assert!(half_used > 8_000_000, "{half_used}");

    let r = env.snap(&["prune", "--no-forget", "--json"]).ok().json();
    assert!(r["prune"]["packs_repack"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["prune"]["packs_written"].as_u64().unwrap() >= 1, "{r}");
    let after = pack_bytes(&env);
    assert!((4_000_000..4_200_000).contains(&after), "after repack: {after}");
    env.snap(&["check", "--read-data"]).ok();
    restore_and_compare(&env, &id, &src, "src");
}

#[test]
fn forget_and_prune_arguments_are_checked() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"a").unwrap();
    env.create(&[src.to_str().unwrap()]);
    env.snap(&["prune", "--keep-last", "1", "--max-unused", "150%"]).fails_with(2, "between 0% and 100%");
    env.snap(&["prune", "--keep-last", "1", "--no-forget"]).fails_with(2, "contradict");
    env.snap(&["prune", "--keep-within", "3 fortnights"]).fails_with(2, "");
    env.snap(&["policy", "set"]).fails_with(2, "at least one keep rule");
    env.snap(&["policy", "set", "--keep-last", "1", "--group-by", "planet"]).fails_with(2, "--group-by");
    env.snap(&["forget", "latest", "--keep-last", "1"]).fails_with(2, "not both");
    env.snap(&["forget", "abcdef123"]).fails_with(14, "no snapshot matches");
    // The newest snapshot of a group survives any policy.
    env.snap(&["prune", "--keep-within", "1h"]).ok();
    assert_eq!(snapshot_ids(&env).len(), 1);
}

/// Every step of prune, killed as `kill -9` would: the repository still
/// checks clean, kept snapshots restore exactly, and a re-run finishes the
/// job with the same result as an uninterrupted prune.
#[test]
fn prune_killed_at_any_step_leaves_a_valid_repository() {
    let template = Env::new();
    let src = noise_files(&template, 12, 300_000, 50);
    template.create(&[src.to_str().unwrap(), "--time", "2026-10-01 10:00:00"]);
    for i in 6..12 {
        fs::remove_file(src.join(format!("f{i:02}"))).unwrap();
    }
    fs::write(src.join("new"), noise(500_000, 7)).unwrap();
    let kept = template.create(&[src.to_str().unwrap(), "--time", "2026-10-02 10:00:00"]);
    let kept_id = kept["snapshot_id"].as_str().unwrap().to_string();

    let reference = Env::empty();
    copy_dir(&template.repo, &reference.repo);
    reference.snap(&["prune", "--keep-last", "1"]).ok();
    let reference_bytes = pack_bytes(&reference);

    for point in [
        "prune-forgotten",
        "prune-planned",
        "prune-pack-written",
        "prune-repacked",
        "prune-exclusive",
        "prune-index-written",
        "prune-index-removed",
        "prune-pack-deleted",
    ] {
        let env = Env::empty();
        copy_dir(&template.repo, &env.repo);
        let killed = common::finish(
            env.command(&["prune", "--keep-last", "1"])
                .env("SNAP_FAILPOINTS", format!("{point}=abort"))
                .output()
                .unwrap(),
        );
        assert_eq!(killed.code, -1, "{point}: prune was not stopped there: {}", killed.stderr);
        let check = env.snap(&["check", "--read-data", "--json"]);
        assert_eq!(check.code, 0, "{point}: {}\n{}", check.stdout, check.stderr);
        restore_and_compare(&env, &kept_id, &src, "src");

        env.snap(&["prune", "--keep-last", "1"]).ok();
        env.snap(&["check", "--read-data"]).ok();
        assert!(env.snap(&["check", "--json"]).ok().json()["warnings"].as_array().unwrap().is_empty(), "{point}");
        assert_eq!(snapshot_ids(&env), std::slice::from_ref(&kept_id), "{point}");
        assert_eq!(pack_bytes(&env), reference_bytes, "{point}: re-run should end where a clean prune does");
        restore_and_compare(&env, &kept_id, &src, "src");
    }
}

/// `a/x.bin` backed up, replaced and backed up again, the first snapshot
/// forgotten: 2 MB for prune to give back.
fn replaced_and_forgotten(env: &Env, seed: u64) -> std::path::PathBuf {
    let a = env.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("x.bin"), noise(2_000_000, seed)).unwrap();
    let old = env.create(&[a.to_str().unwrap()]);
    fs::write(a.join("x.bin"), noise(2_000_000, seed + 1)).unwrap();
    env.create(&[a.to_str().unwrap()]);
    env.snap(&["forget", old["snapshot_id"].as_str().unwrap()]).ok();
    a
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A backup that runs while prune plans, deduplicating against data prune
/// has condemned, ends with a snapshot whose data is all still there.
#[test]
fn backup_during_prune_keeps_the_data_it_reuses() {
    let env = Env::new();
    let a = env.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("x.bin"), noise(3_000_000, 11)).unwrap();
    let old = env.create(&[a.to_str().unwrap()]);
    let b = env.path("b");
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("y.bin"), noise(1_000_000, 12)).unwrap();
    env.create(&[b.to_str().unwrap()]);
    env.snap(&["forget", old["snapshot_id"].as_str().unwrap()]).ok();

    // Prune stops after planning: x.bin's packs are condemned by then.
    let go = env.path("go");
    let prune = env
        .command(&["prune", "--no-forget", "--json"])
        .env("SNAP_FAILPOINTS", format!("prune-planned=wait:{}", go.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&env.path("go.reached"));
    // Meanwhile x.bin is backed up again; it deduplicates against the
    // condemned packs, and the backup is not held up by prune.
    let again = env.create(&[a.to_str().unwrap()]);
    assert_eq!(again["chunks_new"], 0, "{again}");
    fs::write(&go, b"").unwrap();
    let pruned = common::finish(prune.wait_with_output().unwrap()).ok().json();
    assert!(pruned["prune"]["packs_rescued"].as_u64().unwrap() >= 1, "{pruned}");

    env.snap(&["check", "--read-data"]).ok();
    restore_and_compare(&env, again["snapshot_id"].as_str().unwrap(), &a, "a");

    // A later prune has nothing of x.bin to remove.
    env.snap(&["prune", "--no-forget"]).ok();
    env.snap(&["check", "--read-data"]).ok();
    restore_and_compare(&env, again["snapshot_id"].as_str().unwrap(), &a, "a");
}

/// A backup started while prune deletes waits for the short exclusive
/// phase and then succeeds.
#[test]
fn backup_waits_for_the_deleting_phase_then_succeeds() {
    let env = Env::new();
    let a = replaced_and_forgotten(&env, 21);

    let go = env.path("go");
    let mut prune = env
        .command(&["prune", "--no-forget"])
        .env("SNAP_FAILPOINTS", format!("prune-exclusive=wait:{}", go.display()))
        .spawn()
        .unwrap();
    wait_for(&env.path("go.reached"));
    fs::write(a.join("y.bin"), noise(500_000, 23)).unwrap();
    let mut create =
        env.command(&["create", "--json", a.to_str().unwrap()]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(create.try_wait().unwrap().is_none(), "create should wait for prune's exclusive phase");
    fs::write(&go, b"").unwrap();
    assert!(prune.wait().unwrap().success());
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success());
    let id =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["snapshot_id"].as_str().unwrap().to_string();
    env.snap(&["check", "--read-data"]).ok();
    restore_and_compare(&env, &id, &a, "a");
}

/// After disk damage (a pack deleted, another with a flipped byte),
/// `repair index` + `repair snapshots --rewrite` + `prune` bring the
/// repository back to a clean `check --read-data`, with every file that is
/// still intact restorable byte for byte and the lost ones recorded.
#[test]
fn damaged_repository_is_repaired_keeping_what_is_intact() {
    let env = Env::empty();
    env.snap(&["init", "--kdf-memory", "256", "--kdf-iterations", "1", "--pack-size", "1"]).ok();
    let src = env.path("src");
    for dir in ["a", "b"] {
        fs::create_dir_all(src.join(dir)).unwrap();
        for i in 0..4u64 {
            let seed = if dir == "a" { i } else { 10 + i };
            fs::write(src.join(dir).join(format!("f{i}")), noise(700_000, 300 + seed)).unwrap();
        }
    }
    let damaged = env.create(&[src.to_str().unwrap()])["snapshot_id"].as_str().unwrap().to_string();
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("safe"), noise(100_000, 1)).unwrap();
    let safe = env.create(&[other.to_str().unwrap()])["snapshot_id"].as_str().unwrap().to_string();

    // Lose the largest data pack, and flip a byte inside another one.
    let mut packs: Vec<(u64, std::path::PathBuf)> =
        env.files_of("data").into_iter().map(|p| (fs::metadata(&p).unwrap().len(), p)).collect();
    packs.sort();
    let (_, gone) = packs.pop().unwrap();
    fs::remove_file(&gone).unwrap();
    let (_, flipped) = packs.pop().unwrap();
    common::flip_byte(&flipped, 1000);

    env.snap(&["check"]).fails_with(13, "repair snapshots");
    env.snap(&["repair", "index"]).ok();
    // Report first: names the snapshot and what it lost; changes nothing.
    let report = env.snap(&["repair", "snapshots", "--read-data", "--json"]);
    assert_eq!(report.code, 13, "{}", report.stderr);
    let report = report.json();
    let found = report["damaged"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["id"], damaged.as_str());
    assert_eq!(snapshot_ids(&env).len(), 2);

    let fixed = env.snap(&["repair", "snapshots", "--read-data", "--rewrite", "--json"]).ok().json();
    let entry = &fixed["damaged"][0];
    let new_id = entry["replaced_by"].as_str().unwrap().to_string();
    let lost: Vec<String> = entry["lost"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(lost.len() >= 2, "a lost pack and a damaged one: {lost:?}");
    let shown = env.snap(&["show", &new_id, "--json"]).ok().json();
    assert_eq!(shown["original"], damaged.as_str());
    assert_eq!(shown["lost"].as_array().unwrap().len(), lost.len());

    // Everything not lost restores exactly; lost files are absent.
    let out = env.path("restored");
    env.snap(&["restore", &new_id, "--target", out.to_str().unwrap()]).ok();
    let mut intact = 0;
    for dir in ["a", "b"] {
        for i in 0..4 {
            let rel = format!("{dir}/f{i}");
            let is_lost = lost.iter().any(|p| p.ends_with(&rel));
            let restored = out.join("src").join(&rel);
            if is_lost {
                assert!(!restored.exists(), "{rel} was reported lost");
            } else {
                assert!(fs::read(&restored).unwrap() == fs::read(src.join(&rel)).unwrap(), "{rel}");
                intact += 1;
            }
        }
    }
    assert!(intact >= 4, "most files were intact: {intact}");
    restore_and_compare(&env, &safe, &other, "other");

    // The damaged pack's good blobs move on; the bad one goes with the pack.
    env.snap(&["prune", "--no-forget"]).ok();
    env.snap(&["check", "--read-data"]).ok();
}

/// When a backup holds its lock longer than prune will wait, prune says so,
/// deletes nothing, exits 0; the backup completes, and the next prune
/// gives the space back.
#[test]
fn prune_defers_deletion_while_a_long_backup_runs() {
    let env = Env::new();
    let a = replaced_and_forgotten(&env, 31);
    let before = pack_bytes(&env);

    let go = env.path("go");
    let backup = env
        .command(&["create", "--json", a.to_str().unwrap()])
        .env("SNAP_FAILPOINTS", format!("create-before-snapshot=wait:{}", go.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&env.path("go.reached"));
    let r = env.snap(&["prune", "--no-forget", "--lock-wait", "1", "--json"]).ok();
    assert!(r.stderr.contains("space not yet given back"), "{}", r.stderr);
    assert!(r.json()["prune"]["deferred"].is_string());
    assert_eq!(pack_bytes(&env), before);
    fs::write(&go, b"").unwrap();
    let out = backup.wait_with_output().unwrap();
    assert!(out.status.success());
    env.snap(&["check"]).ok();

    let r = env.snap(&["prune", "--no-forget", "--json"]).ok().json();
    assert!(r["prune"]["deferred"].is_null());
    assert!(pack_bytes(&env) < before - 1_500_000);
    env.snap(&["check", "--read-data"]).ok();
}
