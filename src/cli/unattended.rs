//! For runs nobody watches: pings to a health-check service, a JSON webhook,
//! and a Prometheus textfile. None of them can fail a good backup: a
//! notification that cannot be delivered is reported on stderr and the exit
//! code stays the command's own.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::repo::backend::{Backend, FileKind};

/// What the command reported about itself, for notifications and metrics.
pub type Facts = Map<String, Value>;

pub struct Notifier {
    pub ping_url: Option<String>,
    pub webhook: Option<String>,
    client: Option<reqwest::blocking::Client>,
}

impl Notifier {
    pub fn new(ping_url: Option<String>, webhook: Option<String>) -> Notifier {
        let client = (ping_url.is_some() || webhook.is_some())
            .then(|| reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().ok())
            .flatten();
        Notifier { ping_url: ping_url.map(|u| u.trim_end_matches('/').to_string()), webhook, client }
    }

    /// Health-check style: `URL/start` now; later `URL` on success or
    /// `URL/fail` on failure, with a one-line reason as the body.
    pub fn start(&self, command: &str) {
        if let Some(url) = &self.ping_url {
            self.send(&format!("{url}/start"), format!("snap {command} started"), "text/plain");
        }
    }

    pub fn finish(&self, command: &str, code: i32, message: &str, duration: Duration, facts: &Facts) {
        if let Some(url) = &self.ping_url {
            let (target, body) = if code == 0 {
                (url.clone(), format!("snap {command} succeeded"))
            } else {
                (format!("{url}/fail"), format!("snap {command} failed with exit code {code}: {message}"))
            };
            self.send(&target, body, "text/plain");
        }
        if let Some(hook) = &self.webhook {
            let body = json!({
                "event": if code == 0 { "success" } else { "failure" },
                "command": command,
                "exit_code": code,
                "message": message,
                "host": crate::repo::sysinfo::hostname(),
                "duration_s": (duration.as_secs_f64() * 1000.0).round() / 1000.0,
                "result": facts,
            });
            self.send(hook, body.to_string(), "application/json");
        }
    }

    fn send(&self, url: &str, body: String, content_type: &str) {
        let Some(client) = &self.client else {
            super::log::warn("notifications are off: no HTTP client could be built");
            return;
        };
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            match client.post(url).header("content-type", content_type).body(body.clone()).send() {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.without_url().to_string(),
            }
        }
        // The URL may hold a token (healthchecks.io pings do): name its host only.
        let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(String::from)).unwrap_or_default();
        super::log::warn(&format!("could not notify {host}: {last}"));
    }
}

/// Update the Prometheus textfile for `command`: its last run, exit code,
/// duration and numbers, keeping what other commands wrote and the last
/// success time across failures. Written atomically.
pub fn write_metrics(
    path: &Path,
    command: &str,
    code: i32,
    duration: Duration,
    facts: &Facts,
    backend: Option<&dyn Backend>,
) -> std::io::Result<()> {
    let mut samples = read_samples(path);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let label = format!("{{command=\"{command}\"}}");
    let mut set = |name: &str, labels: &str, v: f64| {
        samples.insert((name.to_string(), labels.to_string()), v);
    };
    set("snap_last_run_timestamp_seconds", &label, now);
    set("snap_last_exit_code", &label, code as f64);
    set("snap_last_duration_seconds", &label, duration.as_secs_f64());
    if code == 0 {
        set("snap_last_success_timestamp_seconds", &label, now);
    }
    for (key, metric) in [
        ("bytes_read", "snap_last_bytes_read"),
        ("bytes_added", "snap_last_bytes_added"),
        ("files", "snap_last_files"),
        ("objects", "snap_last_objects"),
        ("rows", "snap_last_rows"),
        ("bytes_deleted", "snap_last_bytes_deleted"),
    ] {
        if let Some(v) = facts.get(key).and_then(Value::as_f64) {
            set(metric, &label, v);
        }
    }
    if let Some(b) = backend {
        if let Ok(snaps) = b.list(FileKind::Snapshot) {
            set("snap_snapshots", "", snaps.len() as f64);
        }
        let mut size = 0u64;
        for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot] {
            size += b.list(kind).map(|l| l.iter().map(|f| f.size).sum::<u64>()).unwrap_or(0);
        }
        set("snap_repository_bytes", "", size as f64);
    }
    let mut text = String::new();
    let mut last_name = String::new();
    for ((name, labels), v) in &samples {
        if *name != last_name {
            let (help, kind) = describe(name);
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            last_name = name.clone();
        }
        text.push_str(&format!("{name}{labels} {v}\n"));
    }
    // node_exporter runs as another user: the file is world-readable.
    super::files::write_atomic(path, text.as_bytes(), 0o644)
}

fn describe(name: &str) -> (&'static str, &'static str) {
    match name {
        "snap_last_run_timestamp_seconds" => ("When the command last ran (Unix time).", "gauge"),
        "snap_last_success_timestamp_seconds" => ("When the command last succeeded (Unix time).", "gauge"),
        "snap_last_exit_code" => ("Exit code of the last run (0 = success).", "gauge"),
        "snap_last_duration_seconds" => ("Duration of the last run.", "gauge"),
        "snap_last_bytes_read" => ("Bytes read from the source by the last run.", "gauge"),
        "snap_last_bytes_added" => ("Bytes the last run added to the repository.", "gauge"),
        "snap_last_files" => ("Files in the last snapshot.", "gauge"),
        "snap_last_objects" => ("Storage objects in the last snapshot.", "gauge"),
        "snap_last_rows" => ("Table rows in the last snapshot.", "gauge"),
        "snap_last_bytes_deleted" => ("Bytes the last prune gave back.", "gauge"),
        "snap_snapshots" => ("Snapshots in the repository.", "gauge"),
        "snap_repository_bytes" => ("Bytes stored in the repository (packs, index, snapshots).", "gauge"),
        _ => ("snap metric.", "gauge"),
    }
}

/// Samples of an earlier file: (name, labels) → value. Lines that do not
/// parse are dropped (the file is ours; a damaged one is rebuilt).
fn read_samples(path: &Path) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(path) else { return out };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        out.insert((name.to_string(), labels.to_string()), v);
    }
    out
}
