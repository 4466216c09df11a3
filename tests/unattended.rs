//! Running unattended: health-check pings, the JSON webhook, the
//! Prometheus textfile, shell completions and the manual page.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::Env;

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
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"hello").unwrap();
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
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), b"x").unwrap();
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
