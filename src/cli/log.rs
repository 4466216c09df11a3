//! What a run says as it goes: notes, warnings and errors. People read
//! them on stderr; machines read `--log-file` (appended, one line per
//! event) in `--log-format human` or `json`. Every line passes through
//! the secret redactor first, so a password that slipped into a message
//! reaches neither.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Map, Value};

use crate::supabase::settings::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

struct Logger {
    command: &'static str,
    format: LogFormat,
    quiet: bool,
    file: Option<Mutex<File>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Set the run's logging up once, before anything is logged. A log file
/// that cannot be opened is an error: a scheduled job whose log silently
/// goes nowhere is worse than one that fails at once.
pub fn init(command: &'static str, format: LogFormat, quiet: bool, file: Option<&Path>) -> Result<(), String> {
    let file = match file {
        Some(path) => {
            Some(Mutex::new(open_append(path).map_err(|e| format!("cannot open log file {}: {e}", path.display()))?))
        }
        None => None,
    };
    let _ = LOGGER.set(Logger { command, format, quiet, file });
    Ok(())
}

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Logs name hosts and projects: readable by the owner only.
    OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger { command: "", format: LogFormat::Human, quiet: false, file: None })
}

/// A note for the person watching (progress of waits, what is being done).
/// `--quiet` hides it on stderr; the log file still gets it.
pub fn info(message: &str) {
    emit(Level::Info, message, None, true);
}

pub fn warn(message: &str) {
    emit(Level::Warn, message, None, true);
}

pub fn error(message: &str) {
    emit(Level::Error, message, None, true);
}

/// A record for the log file only (run started, run finished with its
/// numbers); stderr already shows the command's own summary.
pub fn record(level: Level, message: &str, fields: Option<&Map<String, Value>>) {
    emit(level, message, fields, false);
}

fn emit(level: Level, message: &str, fields: Option<&Map<String, Value>>, to_stderr: bool) {
    let log = logger();
    let text = redact(message.strip_prefix("snap: ").unwrap_or(message));
    if to_stderr && !(log.quiet && level == Level::Info) {
        let line = match log.format {
            // Without a log file, `--log-format json` turns stderr into the
            // machine stream (journald, a container's log collector).
            LogFormat::Json if log.file.is_none() => json_line(log, level, &text, fields),
            _ => human_stderr(level, &text),
        };
        eprintln!("{line}");
    }
    if let Some(file) = &log.file {
        let line = match log.format {
            LogFormat::Json => json_line(log, level, &text, fields),
            LogFormat::Human => human_file(log, level, &text, fields),
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line so that concurrent runs appending to the same
        // file do not interleave inside a line.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn human_stderr(level: Level, text: &str) -> String {
    match level {
        Level::Info => text.to_string(),
        Level::Warn => format!("snap: warning: {text}"),
        Level::Error => format!("snap: error: {text}"),
    }
}

fn human_file(log: &Logger, level: Level, text: &str, fields: Option<&Map<String, Value>>) -> String {
    let mut line = format!(
        "{} {:<5} snap[{}] {}: {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        level.name(),
        std::process::id(),
        log.command,
        text
    );
    if let Some(f) = fields.filter(|f| !f.is_empty()) {
        line.push(' ');
        line.push_str(&redact(&Value::Object(f.clone()).to_string()));
    }
    line
}

fn json_line(log: &Logger, level: Level, text: &str, fields: Option<&Map<String, Value>>) -> String {
    let mut v = json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": level.name(),
        "pid": std::process::id(),
        "command": log.command,
        "message": text,
    });
    if let Some(f) = fields.filter(|f| !f.is_empty()) {
        v["fields"] = Value::Object(f.clone());
    }
    redact(&v.to_string())
}
