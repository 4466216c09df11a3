//! Rendering: human text, `--json`, progress bars, exit codes.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::repo::saver::{Progress, WorkProgress};

/// Exit codes, documented in docs/CLI.md.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const NO_REPOSITORY: i32 = 10;
    pub const WRONG_PASSWORD: i32 = 11;
    pub const LOCKED: i32 = 12;
    pub const INTEGRITY: i32 = 13;
    pub const NOT_FOUND: i32 = 14;
    pub const DIFFERENT: i32 = 15;
}

#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    pub fn progress_enabled(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }

    pub fn json(&self, value: &serde_json::Value) {
        println!("{}", serde_json::to_string_pretty(value).expect("json serialises"));
    }

    /// A note on stderr (hidden by --quiet) and in the log file.
    pub fn note(&self, msg: &str) {
        super::log::info(msg);
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A progress line on stderr while a long command runs; nothing when not a
/// terminal. `render` builds the line from live counters every 200 ms and
/// gets the time since start.
pub struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    pub fn start(out: Output, render: impl Fn(Duration) -> String + Send + 'static) -> ProgressDisplay {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = out.progress_enabled().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                        .expect("valid template"),
                );
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    bar.set_message(render(started.elapsed()));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(200));
                }
                bar.finish_and_clear();
            })
        });
        ProgressDisplay { stop, handle }
    }

    /// Progress of a create: files, bytes read and rate, bytes added, chunks.
    pub fn create(out: Output, progress: Arc<Progress>) -> ProgressDisplay {
        ProgressDisplay::start(out, move |elapsed| {
            let read = Progress::get(&progress.bytes_read);
            let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
            format!(
                "{} files, {} read ({}/s), {} added, {} of {} chunks new",
                Progress::get(&progress.files),
                bytes(read),
                bytes(rate as u64),
                bytes(Progress::get(&progress.bytes_added)),
                Progress::get(&progress.chunks_new),
                Progress::get(&progress.chunks),
            )
        })
    }

    /// Progress of work with a known total: `noun` counts items.
    pub fn work(out: Output, noun: &'static str, progress: Arc<WorkProgress>) -> ProgressDisplay {
        ProgressDisplay::start(out, move |elapsed| {
            let done = progress.done_bytes.load(Ordering::Relaxed);
            let total = progress.total_bytes.load(Ordering::Relaxed);
            let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
            let pct = if total > 0 { format!(" ({:.0}%)", done as f64 * 100.0 / total as f64) } else { String::new() };
            format!(
                "{} of {} {noun}, {} of {}{pct}, {}/s",
                progress.done_items.load(Ordering::Relaxed),
                progress.total_items.load(Ordering::Relaxed),
                bytes(done),
                bytes(total),
                bytes(rate as u64),
            )
        })
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn local_time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The summary fields every `create --json` reports.
pub fn summary_json(s: &crate::repo::format::snapshot::Summary) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "files": s.files,
        "dirs": s.dirs,
        "bytes_read": s.bytes_read,
        "bytes_added": s.bytes_added,
        "chunks_total": s.chunks_total,
        "chunks_new": s.chunks_new,
        "duration_s": s.duration_s,
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}
