//! Running unattended: `snap doctor` against good and broken set-ups,
//! `snap schedule` units and crontab lines, log files, health-check
//! pings, the JSON webhook, the Prometheus textfile, shell completions and
//! the manual page.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::pg::Cluster;
use common::storage::StorageServer;
use common::Env;
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP server on loopback that records every request and answers 200.
fn receiver() -> (String, Seen) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", server.server_addr().to_ip().unwrap().port());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            let _ = req.as_reader().read_to_string(&mut body);
            log.lock().unwrap().push((req.method().to_string(), req.url().to_string(), body));
            let _ = req.respond(tiny_http::Response::empty(200));
        }
    });
    (base, seen)
}

/// Parse a Prometheus text file: `name{labels}` → value; every line must be
/// a comment or a sample.
fn samples(path: &std::path::Path) -> std::collections::HashMap<String, f64> {
    let text = fs::read_to_string(path).unwrap();
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(series.chars().next().unwrap().is_ascii_alphabetic(), "{line}");
        out.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    out
}

#[test]
fn success_and_failure_are_notified_and_measured() {
    let env = Env::new();
    let (base, seen) = receiver();
    let src = env.tree("src", &[("a", b"hello")]);
    let metrics = env.path("snap.prom");
    let ping = format!("{base}/ping/token123");
    let hook = format!("{base}/hook");
    let flags = ["--notify-url", &ping, "--notify-webhook", &hook, "--metrics-file", metrics.to_str().unwrap()];

    let mut args = vec!["create", src.to_str().unwrap()];
    args.extend_from_slice(&flags);
    env.snap(&args).ok();
    {
        let seen = seen.lock().unwrap();
        let urls: Vec<&str> = seen.iter().map(|(_, u, _)| u.as_str()).collect();
        assert_eq!(urls, ["/ping/token123/start", "/ping/token123", "/hook"], "{seen:?}");
        let event: serde_json::Value = serde_json::from_str(&seen[2].2).unwrap();
        assert_eq!(event["event"], "success");
        assert_eq!(event["command"], "create");
        assert_eq!(event["exit_code"], 0);
        assert_eq!(event["result"]["bytes_read"], 5);
        assert_eq!(event["result"]["snapshot_id"].as_str().unwrap().len(), 64);
    }
    let m = samples(&metrics);
    assert_eq!(m["snap_last_exit_code{command=\"create\"}"], 0.0);
    assert_eq!(m["snap_snapshots"], 1.0);
    assert_eq!(m["snap_last_bytes_read{command=\"create\"}"], 5.0);
    assert!(m["snap_repository_bytes"] > 0.0);
    let success = m["snap_last_success_timestamp_seconds{command=\"create\"}"];
    assert!(success > 1.7e9);

    // A failing run: /fail with the reason, a failure event, and metrics
    // that keep the last success time.
    seen.lock().unwrap().clear();
    let missing = env.path("no-such-dir");
    let mut args = vec!["create", missing.to_str().unwrap()];
    args.extend_from_slice(&flags);
    let failed = env.snap(&args);
    assert_ne!(failed.code, 0);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[1].1, "/ping/token123/fail", "{seen:?}");
        assert!(seen[1].2.contains(&format!("exit code {}", failed.code)), "{}", seen[1].2);
        let event: serde_json::Value = serde_json::from_str(&seen[2].2).unwrap();
        assert_eq!(event["event"], "failure");
        assert_eq!(event["exit_code"], failed.code);
        assert!(!event["message"].as_str().unwrap().is_empty());
        // The repository password never travels.
        assert!(seen.iter().all(|(_, _, body)| !body.contains("correct horse")));
    }
    let m = samples(&metrics);
    assert_eq!(m["snap_last_exit_code{command=\"create\"}"], failed.code as f64);
    assert_eq!(m["snap_last_success_timestamp_seconds{command=\"create\"}"], success);

    // Another command keeps its own series beside create's.
    env.snap(&["check", "--metrics-file", metrics.to_str().unwrap()]).ok();
    let m = samples(&metrics);
    assert_eq!(m["snap_last_exit_code{command=\"check\"}"], 0.0);
    assert_eq!(m["snap_last_success_timestamp_seconds{command=\"create\"}"], success);
}

#[test]
fn an_undeliverable_notification_does_not_fail_a_good_backup() {
    let env = Env::new();
    let src = env.tree("src", &[("a", b"x")]);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}/ping");
    let r = env.snap(&["create", src.to_str().unwrap(), "--notify-url", &url]).ok();
    assert!(r.stderr.contains("could not notify 127.0.0.1"), "{}", r.stderr);
}

#[test]
fn completions_and_manual_page_come_from_the_cli_definition() {
    let env = Env::empty();
    let bash = env.snap(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("prune") && bash.stdout.contains("--keep-daily"));
    let script = env.path("snap.bash");
    fs::write(&script, &bash.stdout).unwrap();
    assert!(std::process::Command::new("bash").arg("-n").arg(&script).status().unwrap().success());
    for shell in ["zsh", "fish"] {
        assert!(env.snap(&["completions", shell]).ok().stdout.contains("prune"));
    }
    let man = env.snap(&["man"]).ok();
    assert!(man.stdout.contains(".TH snap 1"), "{}", &man.stdout[..200.min(man.stdout.len())]);
    assert!(man.stdout.contains("prune"));
}

/// A token shaped like Supabase's legacy API keys (the test server checks
/// only that it is the one it was given).
fn jwt(claims: &str) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(claims),
        e.encode(rand::random::<[u8; 16]>())
    )
}

fn check_status<'a>(report: &'a Value, check: &str) -> &'a Value {
    let found = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == check);
    found.unwrap_or_else(|| panic!("no {check} check in {report:#}"))
}

#[test]
fn doctor_passes_a_good_setup_and_names_each_broken_part() {
    let cluster = Cluster::supabase_like();
    let key = jwt(r#"{"iss":"supabase","role":"service_role","exp":4102444800}"#);
    let storage = StorageServer::start_in(tempfile::tempdir().unwrap(), &key, "");
    storage.create_bucket(json!({"name": "avatars"}));
    storage.upload("avatars", "a.txt", b"hello", "text/plain", None);
    let env = Env::new();
    let project = |args: &[&str], vars: &[(&str, &str)]| {
        let mut c = env.command(args);
        c.env("SUPABASE_DB_URL", cluster.url())
            .env("PGPASSWORD", "postgres")
            .env("SUPABASE_STORAGE_URL", storage.url())
            .env("SUPABASE_SERVICE_ROLE_KEY", &key)
            .env_remove("SUPABASE_URL")
            .env_remove("SNAP_PG_BIN");
        for (k, v) in vars {
            c.env(k, v);
        }
        common::finish(c.output().unwrap())
    };
    let doctor = |vars: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["doctor", "--json"];
        args.extend_from_slice(extra);
        let run = project(&args, vars);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        (run.code, run.json(), run.stdout + &run.stderr)
    };

    // Everything is in place but a backup: that alone fails.
    let (code, report, _) = doctor(&[], &[]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["failed"], 1, "{report:#}");
    assert_eq!(check_status(&report, "newest snapshot")["status"], "fail");
    assert!(check_status(&report, "newest snapshot")["fix"].as_str().unwrap().contains("snap create"));

    project(&["create", "--json"], &[]).ok();
    let (code, report, text) = doctor(&[], &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    for check in [
        "repository",
        "password",
        "newest snapshot",
        "database",
        "database encryption",
        "database privileges",
        "pg_dump",
        "pg_dumpall",
        "psql",
        "storage key",
        "storage encryption",
        "storage api",
        "clock",
    ] {
        assert_eq!(check_status(&report, check)["status"], "pass", "{check}: {report:#}");
    }
    assert!(["pass", "warn"].contains(&check_status(&report, "free space")["status"].as_str().unwrap()));
    assert!(check_status(&report, "storage api")["detail"].as_str().unwrap().contains("1 buckets"));
    assert!(!text.contains(&key) && !text.contains("correct horse"));
    // The human table: one line per check, a fix under each failure.
    let human = project(&["doctor"], &[("SUPABASE_SERVICE_ROLE_KEY", "sb_publishable_abc")]);
    assert_eq!(human.code, 1);
    assert!(human.stdout.lines().any(|l| l.starts_with("ok") && l.contains("database privileges")), "{}", human.stdout);
    assert!(human.stdout.lines().any(|l| l.starts_with("FAIL") && l.contains("storage key")), "{}", human.stdout);
    assert!(human.stdout.contains("fix: use the service_role"), "{}", human.stdout);
    assert!(human.stderr.contains("doctor check(s) failed") && !human.stderr.contains("sb_publishable_abc"));

    // A key the server does not accept.
    let wrong = jwt(r#"{"role":"service_role"}"#);
    let (code, report, text) = doctor(&[("SUPABASE_SERVICE_ROLE_KEY", &wrong)], &[]);
    assert_eq!(code, 1);
    let api = check_status(&report, "storage api");
    assert_eq!(api["status"], "fail", "{report:#}");
    assert!(api["detail"].as_str().unwrap().contains("403") || api["detail"].as_str().unwrap().contains("401"));
    assert!(api["fix"].as_str().unwrap().contains("service_role"));
    assert_eq!(check_status(&report, "clock")["status"], "skip");
    assert!(!text.contains(&wrong));
    // The anon key: accepted by the server, but it sees only what RLS allows.
    let (code, report, _) = doctor(&[("SUPABASE_SERVICE_ROLE_KEY", &jwt(r#"{"role":"anon"}"#))], &[]);
    assert_eq!(code, 1);
    assert!(check_status(&report, "storage key")["detail"].as_str().unwrap().contains("anon"));

    // pg_dump older than the server.
    let old = env.path("old-bin");
    fs::create_dir_all(&old).unwrap();
    for tool in ["pg_dump", "pg_dumpall", "psql"] {
        let path = old.join(tool);
        fs::write(&path, format!("#!/bin/sh\necho '{tool} (PostgreSQL) 14.11'\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (code, report, _) = doctor(&[("SNAP_PG_BIN", old.to_str().unwrap())], &["--only", "db"]);
    assert_eq!(code, 1);
    let dump = check_status(&report, "pg_dump");
    assert_eq!(dump["status"], "fail", "{report:#}");
    assert!(dump["detail"].as_str().unwrap().contains("14.11"), "{dump}");
    assert!(dump["fix"].as_str().unwrap().contains("postgresql-client-15"), "{dump}");
    assert!(!report["checks"].as_array().unwrap().iter().any(|c| c["check"] == "storage api"), "{report:#}");

    // The wrong repository password.
    let (code, report, _) = doctor(&[("SNAP_PASSWORD", "not the password")], &[]);
    assert_eq!(code, 1);
    assert_eq!(check_status(&report, "password")["status"], "fail");
    assert_eq!(check_status(&report, "newest snapshot")["status"], "skip");
    // A stale backup.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, report, _) = doctor(&[], &["--max-age", "1s"]);
    assert_eq!(code, 1);
    assert!(check_status(&report, "newest snapshot")["detail"].as_str().unwrap().contains("older than --max-age"));
    // A database that is down.
    cluster.stop();
    let (code, report, _) = doctor(&[], &[]);
    assert_eq!(code, 1);
    let db = check_status(&report, "database");
    assert_eq!(db["status"], "fail");
    assert!(db["fix"].as_str().unwrap().contains("running"), "{db}");
    assert_eq!(check_status(&report, "pg_dump")["status"], "skip");
    assert_eq!(check_status(&report, "storage api")["status"], "pass");
}

/// A home of its own, so the test never touches the real user's units.
fn schedule_command(env: &Env, home: &Path, args: &[&str]) -> Command {
    let mut c = env.command(args);
    c.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env_remove("SUPABASE_DB_URL")
        .env_remove("SUPABASE_URL")
        .env_remove("SUPABASE_STORAGE_URL")
        .env_remove("SUPABASE_SERVICE_ROLE_KEY")
        .env_remove("PGPASSWORD");
    c
}

#[test]
fn schedule_writes_units_that_systemd_accepts_with_secrets_kept_out() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let home = env.path("home");
    let project = env.path("project.env");
    fs::write(&project, "SUPABASE_DB_URL=postgres://postgres@db.example.com:5432/postgres\nPGPASSWORD=db-secret-1\n")
        .unwrap();
    let sched = |args: &[&str]| common::finish(schedule_command(&env, &home, args).output().unwrap());

    // --prune needs a saved policy.
    let base = ["schedule", "install", "--mode", "systemd", "--no-enable", "--env-file", project.to_str().unwrap()];
    let mut with_prune = base.to_vec();
    with_prune.extend(["--prune", "--on-calendar", "*-*-* 03:30"]);
    sched(&with_prune).fails_with(2, "snap policy set");
    env.snap(&["policy", "set", "--keep-daily", "7"]).ok();
    let mut bad_calendar = base.to_vec();
    bad_calendar.extend(["--on-calendar", "every full moon"]);
    sched(&bad_calendar).fails_with(2, "calendar");

    let mut args = with_prune.clone();
    args.extend(["--json", "--", "--only", "db", "--tag", "nightly 50%"]);
    let run = sched(&args).ok();
    // The test binary lives in a build (or, for a checkout in /tmp, a
    // temporary) folder: the user is told.
    assert!(run.stderr.contains("would break the schedule") && run.stderr.contains("--binary"), "{}", run.stderr);
    assert!(run.stderr.contains("loginctl enable-linger"), "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["enabled"], false);

    let env_file = home.join(".config/snap/backup.env");
    assert_eq!(fs::metadata(&env_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(env_file.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let vars = fs::read_to_string(&env_file).unwrap();
    assert!(vars.contains("SNAP_PASSWORD='correct horse'"), "{vars}");
    assert!(vars.contains("PGPASSWORD='db-secret-1'") && vars.contains("db.example.com"), "{vars}");
    assert!(vars.contains(&format!("SNAP_REPOSITORY='{}'", env.repo.display())), "{vars}");

    let units = home.join(".config/systemd/user");
    let service = fs::read_to_string(units.join("snap-backup.service")).unwrap();
    let binary = fs::canonicalize(env!("CARGO_BIN_EXE_snap")).unwrap();
    assert!(service.contains(&format!("EnvironmentFile={}", env_file.display())), "{service}");
    let exec: Vec<&str> = service.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    assert_eq!(exec.len(), 2, "{service}");
    assert!(exec[0].starts_with(&format!("ExecStart={} --log-file ", binary.display())), "{service}");
    assert!(exec[0].ends_with("create --only db --tag \"nightly 50%%\""), "{service}");
    assert!(exec[1].ends_with(" prune"), "{service}");
    assert!(fs::read_to_string(units.join("snap-backup.timer")).unwrap().contains("OnCalendar=*-*-* 03:30"));
    let check = fs::read_to_string(units.join("snap-backup-check.service")).unwrap();
    assert!(check.contains("check --read-data-subset 5%%"), "{check}");
    for unit in fs::read_dir(&units).unwrap() {
        let text = fs::read_to_string(unit.unwrap().path()).unwrap();
        assert!(!text.contains("correct horse") && !text.contains("db-secret-1"), "{text}");
    }

    // systemd itself parses and checks each unit (and that ExecStart runs).
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(analyze.is_ok(), "systemd-analyze is needed (Debian package systemd; scripts/install-deps installs it)");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            ["snap-backup.service", "snap-backup.timer", "snap-backup-check.service", "snap-backup-check.timer"]
                .map(|u| units.join(u)),
        )
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{complaints}");
    assert!(!complaints.contains(".service:") && !complaints.contains(".timer:"), "{complaints}");

    let status = sched(&["schedule", "status", "--json"]).ok().json();
    assert_eq!(status["env_file_mode"], "600");
    assert!(status["units"].as_array().unwrap().iter().all(|u| u["exists"] == true), "{status}");

    // Secrets in the environment file really reach a run: the file, loaded
    // as systemd would, opens the repository.
    let loaded = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("set -a; . '{}'; exec '{}' snapshots --json", env_file.display(), binary.display()))
        .env_clear()
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));

    let removed = sched(&["schedule", "remove", "--json"]).ok().json();
    assert_eq!(removed["removed"].as_array().unwrap().len(), 5, "{removed}");
    assert!(!env_file.exists() && !units.join("snap-backup.service").exists());
    sched(&["schedule", "status"]).fails_with(14, "no schedule named backup");
}

#[test]
fn without_systemd_the_crontab_line_backs_up() {
    let env = Env::new();
    let home = env.path("home");
    let src = env.tree("src", &[("a.txt", b"nightly data")]);
    let bin_dir = env.path("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    let binary = bin_dir.join("snap");
    fs::copy(env!("CARGO_BIN_EXE_snap"), &binary).unwrap();
    let run = common::finish(
        schedule_command(
            &env,
            &home,
            &[
                "schedule",
                "install",
                "--mode",
                "cron",
                "--binary",
                binary.to_str().unwrap(),
                "--json",
                "--",
                src.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap(),
    )
    .ok();
    let out = run.json();
    let lines: Vec<&str> = out["crontab"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    let fields: Vec<&str> = lines[0].splitn(6, ' ').collect();
    assert_eq!(&fields[1..5], ["3", "*", "*", "*"], "{}", lines[0]);
    assert!(lines[1].contains("'check' '--read-data-subset' '5\\%'"), "{}", lines[1]);
    assert!(!lines.iter().any(|l| l.contains("correct horse")));
    // Run the backup line as cron would: sh, with a bare environment.
    let shell = fields[5].replace("\\%", "%");
    let done = Command::new("/bin/sh").arg("-c").arg(&shell).env_clear().env("HOME", &home).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let snaps = env.snap(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let log = fs::read_to_string(home.join(".local/state/snap/backup.log")).unwrap();
    assert!(log.contains("create succeeded"), "{log}");
}

#[test]
fn log_file_gets_json_lines_without_secrets() {
    let env = Env::new();
    let log = env.path("logs/snap.log");
    let src = env.tree("src", &[("a", b"x")]);
    env.snap(&["create", src.to_str().unwrap(), "--log-file", log.to_str().unwrap(), "--log-format", "json"]).ok();
    // A failure whose message would carry a secret from the environment.
    let mut c = env.command(&["create", "--only", "db", "--log-file", log.to_str().unwrap(), "--log-format", "json"]);
    c.env("SUPABASE_DB_URL", "postgres://postgres:hunter2-db-secret@127.0.0.1:1/postgres")
        .env_remove("SUPABASE_URL")
        .env_remove("SUPABASE_STORAGE_URL");
    let failed = common::finish(c.output().unwrap());
    assert_ne!(failed.code, 0);
    assert!(!failed.stderr.contains("hunter2-db-secret"), "{}", failed.stderr);

    let text = fs::read_to_string(&log).unwrap();
    assert!(!text.contains("hunter2-db-secret") && !text.contains("correct horse"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for e in &events {
        assert!(e["time"].as_str().unwrap().ends_with('Z') && e["pid"].as_u64().is_some(), "{e}");
        assert_eq!(e["command"], "create");
    }
    let messages: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert!(messages[0].contains("create started"), "{messages:?}");
    assert!(messages[1].starts_with("create succeeded"), "{messages:?}");
    assert_eq!(events[1]["fields"]["bytes_read"], 1);
    assert_eq!(events.last().unwrap()["level"], "error");
    assert!(events.iter().any(|e| e["level"] == "error" && e["message"].as_str().unwrap().contains("127.0.0.1:1")));

    // Without a log file, --log-format json makes stderr the machine stream.
    let bad = env.snap(&["snapshots", "--log-format", "json", "--repo", "/nonexistent/repo"]);
    let line: Value = serde_json::from_str(bad.stderr.lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    // An unwritable log file fails at once rather than losing the log.
    env.snap(&["snapshots", "--log-file", "/proc/snap.log"]).fails_with(2, "cannot open log file");
}
