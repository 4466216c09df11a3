//! `snap schedule`: nightly backups without glue scripts. systemd user
//! units where systemd runs the machine, else a crontab line. Secrets live
//! in one 0600 environment file, never in a unit or a crontab; the units
//! call snap by an absolute path.
//!
//! The environment file is written in the one subset of syntax that
//! systemd's `EnvironmentFile=`, POSIX `sh` (`. FILE`, for cron) and the
//! dotenv parser snap itself uses all read the same way: `KEY='value'`, or
//! `KEY="value"` for values holding a single quote but no `$`, backquote,
//! backslash or double quote.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use super::args::{ScheduleCommand, ScheduleInstallArgs, ScheduleMode};
use super::output::exit;
use super::{CliError, CliResult, Context};
use crate::repo::ops::forget::saved_policy;
use crate::supabase::settings::SettingsSource;

pub fn cmd_schedule(ctx: &Context, c: &ScheduleCommand) -> CliResult {
    match c {
        ScheduleCommand::Install(a) => install(ctx, a),
        ScheduleCommand::Status(n) => status(ctx, &Layout::new(&n.name)?),
        ScheduleCommand::Remove(n) => remove(ctx, &Layout::new(&n.name)?),
    }
}

/// Where one named schedule's files live (XDG base directories).
struct Layout {
    name: String,
    env_file: PathBuf,
    unit_dir: PathBuf,
    log_file: PathBuf,
}

impl Layout {
    fn new(name: &str) -> Result<Layout, CliError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(CliError::usage("--name takes letters, digits, - and _ only"));
        }
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| CliError::usage("HOME is not set: cannot tell where user units go"))?;
        let xdg = |var: &str, default: &str| {
            std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| home.join(default))
        };
        let config = xdg("XDG_CONFIG_HOME", ".config");
        Ok(Layout {
            name: name.to_string(),
            env_file: config.join("snap").join(format!("{name}.env")),
            unit_dir: config.join("systemd").join("user"),
            log_file: xdg("XDG_STATE_HOME", ".local/state").join("snap").join(format!("{name}.log")),
        })
    }

    fn backup_unit(&self) -> String {
        format!("snap-{}", self.name)
    }

    fn check_unit(&self) -> String {
        format!("snap-{}-check", self.name)
    }

    fn unit_files(&self) -> Vec<PathBuf> {
        [self.backup_unit(), self.check_unit()]
            .iter()
            .flat_map(|u| [format!("{u}.service"), format!("{u}.timer")])
            .map(|f| self.unit_dir.join(f))
            .collect()
    }

    fn timers(&self) -> Vec<String> {
        vec![format!("{}.timer", self.backup_unit()), format!("{}.timer", self.check_unit())]
    }
}

/// The commands one scheduled run executes, as argument lists after the
/// binary.
struct Jobs {
    backup: Vec<Vec<String>>,
    check: Option<Vec<String>>,
}

fn install(ctx: &Context, a: &ScheduleInstallArgs) -> CliResult {
    let layout = Layout::new(&a.name.name)?;
    let mode = match a.mode {
        ScheduleMode::Auto if systemd_runs_here() => ScheduleMode::Systemd,
        ScheduleMode::Auto => ScheduleMode::Cron,
        m => m,
    };
    let binary = binary_path(a.binary.as_deref())?;
    if let Some(why) = unstable_location(&binary) {
        super::log::warn(&format!(
            "{} {why}: a rebuild or clean-up would break the schedule; copy it to /usr/local/bin (or ~/.local/bin) \
             and pass --binary",
            binary.display()
        ));
    }
    if mode == ScheduleMode::Systemd {
        for cal in std::iter::once(&a.on_calendar).chain((!a.no_check).then_some(&a.check_calendar)) {
            validate_calendar(cal)?;
        }
    }
    super::retention::parse_percent("--check-subset", &a.check_subset)?;

    let mut env = repository_env(ctx, a.prune)?;
    let project = project_env(a)?;
    let backs_up_paths = a.create_args.iter().any(|x| !x.starts_with('-'));
    if project.is_empty() && !backs_up_paths {
        return Err(CliError::usage(
            "nothing to back up: set SUPABASE_DB_URL / SUPABASE_URL (or use --env-file), or give paths after --",
        ));
    }
    env.extend(project);
    for var in ["SNAP_PG_BIN", "SNAP_HTTP_READ_TIMEOUT"] {
        if let Ok(v) = std::env::var(var) {
            env.push((var.to_string(), v));
        }
    }
    let text = env_file_text(&env)?;
    write_private(&layout.env_file, text.as_bytes())?;

    let log = layout.log_file.display().to_string();
    let run =
        |args: &[&str]| -> Vec<String> { ["--log-file", &log].iter().chain(args).map(|s| s.to_string()).collect() };
    let mut create = run(&["create"]);
    create.extend(a.create_args.iter().cloned());
    let mut backup = vec![create];
    if a.prune {
        backup.push(run(&["prune"]));
    }
    let check = (!a.no_check).then(|| run(&["check", "--read-data-subset", &a.check_subset]));
    let jobs = Jobs { backup, check };

    let result = match mode {
        ScheduleMode::Cron => install_cron(ctx, &layout, &binary, &jobs, a),
        _ => install_systemd(ctx, &layout, &binary, &jobs, a),
    };
    ctx.record(json!({"schedule": layout.name}));
    result
}

fn systemd_runs_here() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn binary_path(given: Option<&Path>) -> Result<PathBuf, CliError> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(|e| CliError::usage(format!("cannot tell where snap is: {e}")))?,
    };
    let abs = std::fs::canonicalize(&path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&abs).map_err(|e| CliError::usage(format!("{}: {e}", abs.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(CliError::usage(format!("{} is not an executable file", abs.display())));
    }
    Ok(abs)
}

/// Why a binary at `path` may vanish: a temporary or build folder.
fn unstable_location(path: &Path) -> Option<&'static str> {
    let s = path.to_string_lossy();
    let tmp = std::env::temp_dir();
    if path.starts_with(&tmp) || ["/tmp/", "/var/tmp/", "/dev/shm/"].iter().any(|t| s.starts_with(t)) {
        return Some("is in a temporary folder");
    }
    if ["/target/debug/", "/target/release/", "/.cargo/registry/", "/.rustup/"].iter().any(|t| s.contains(t)) {
        return Some("is in a build folder");
    }
    None
}

fn validate_calendar(expr: &str) -> Result<(), CliError> {
    if expr.contains(['\n', '\r']) {
        return Err(CliError::usage("a calendar expression is one line"));
    }
    // Without systemd-analyze the expression is left for systemd to judge.
    let Ok(out) = Command::new("systemd-analyze").args(["calendar", expr]).stdin(Stdio::null()).output() else {
        return Ok(());
    };
    if !out.status.success() {
        return Err(CliError::usage(format!(
            "{expr:?} is not a systemd calendar expression (e.g. daily, hourly, \"*-*-* 03:30\"): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The repository and how to open it: the same source of the password as
/// now (a file or command is referenced, not copied), checked by opening
/// the repository before anything is written.
fn repository_env(ctx: &Context, prune: bool) -> Result<Vec<(String, String)>, CliError> {
    let location = ctx
        .cli
        .repo
        .as_deref()
        .ok_or_else(|| CliError::usage("no repository given: use --repo or set SNAP_REPOSITORY"))?;
    let location = if location.starts_with("s3:") {
        location.to_string()
    } else {
        absolute(Path::new(location))?.display().to_string()
    };
    let mut env = vec![("SNAP_REPOSITORY".to_string(), location.clone())];
    let (repo, pw) = ctx.open_keeping_password()?;
    if let Some(key) = &ctx.cli.master_key_file {
        env.push(("SNAP_MASTER_KEY_FILE".into(), absolute(key)?.display().to_string()));
    } else if let Ok(file) = std::env::var("SNAP_PASSWORD_FILE") {
        env.push(("SNAP_PASSWORD_FILE".into(), absolute(Path::new(&file))?.display().to_string()));
    } else if let Ok(cmd) = std::env::var("SNAP_PASSWORD_COMMAND") {
        env.push(("SNAP_PASSWORD_COMMAND".into(), cmd));
    } else if let Some(pw) = pw {
        let text = String::from_utf8(pw.to_vec())
            .map_err(|_| CliError::usage("the password is not UTF-8: put it in a file and set SNAP_PASSWORD_FILE"))?;
        env.push(("SNAP_PASSWORD".into(), text));
    }
    if prune && saved_policy(&repo)?.is_none() {
        return Err(CliError::usage(
            "--prune uses the saved retention policy, and none is saved: save one first, e.g. \
             `snap policy set --keep-daily 7 --keep-weekly 4 --keep-monthly 12`",
        ));
    }
    // An S3 repository needs its credentials and settings at run time too.
    // Files named by AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE stay
    // references; AWS_PROFILE works through them.
    if location.starts_with("s3:") {
        for var in S3_VARS {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                env.push((var.to_string(), v));
            }
        }
    }
    let cli = ctx.cli;
    for (var, value) in [
        ("SNAP_NOTIFY_URL", cli.notify_url.clone()),
        ("SNAP_NOTIFY_WEBHOOK", cli.notify_webhook.clone()),
        ("SNAP_METRICS_FILE", cli.metrics_file.as_deref().map(absolute).transpose()?.map(|p| p.display().to_string())),
    ] {
        if let Some(v) = value {
            env.push((var.to_string(), v));
        }
    }
    Ok(env)
}

const S3_VARS: [&str; 11] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "SNAP_S3_ADDRESSING",
    "SNAP_S3_RETRIES",
    "SNAP_CACHE_DIR",
];

/// The project's settings as they are set now (flags, environment, env
/// file). `NAME_FILE` indirections stay indirections, made absolute.
fn project_env(a: &ScheduleInstallArgs) -> Result<Vec<(String, String)>, CliError> {
    let source = SettingsSource::load(a.project.env_file.as_deref())?;
    let p = &a.project;
    let flags = super::project::url_flags(p);
    for (flag, value) in
        [("--db-url", &flags.db_url), ("--supabase-url", &flags.supabase_url), ("--storage-url", &flags.storage_url)]
    {
        if let Some(v) = value {
            crate::supabase::settings::check_flag_url(flag, v)?;
        }
    }
    let mut env = Vec::new();
    for (var, flag) in [
        ("SUPABASE_DB_URL", &flags.db_url),
        ("PGPASSWORD", &None),
        ("SUPABASE_URL", &flags.supabase_url),
        ("SUPABASE_STORAGE_URL", &flags.storage_url),
        ("SUPABASE_SERVICE_ROLE_KEY", &None),
    ] {
        if let Some(v) = flag.clone().or_else(|| source.raw(var)) {
            env.push((var.to_string(), v));
        } else if let Some(file) = source.raw(&format!("{var}_FILE")) {
            env.push((format!("{var}_FILE"), absolute(Path::new(&file))?.display().to_string()));
        }
    }
    Ok(env)
}

fn absolute(p: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))
}

fn env_file_text(env: &[(String, String)]) -> Result<String, CliError> {
    let mut text = String::from(
        "# Written by `snap schedule install`: the settings the scheduled runs use.\n\
         # It holds secrets: keep it mode 0600.\n",
    );
    for (k, v) in env {
        text.push_str(&env_line(k, v)?);
        text.push('\n');
    }
    Ok(text)
}

fn env_line(key: &str, value: &str) -> Result<String, CliError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(CliError::usage(format!("{key} holds a line break, which an environment file cannot carry")));
    }
    if !value.contains('\'') {
        return Ok(format!("{key}='{value}'"));
    }
    if !value.contains(['$', '`', '\\', '"']) {
        return Ok(format!("{key}=\"{value}\""));
    }
    Err(CliError::usage(format!(
        "{key} holds both a single quote and one of $ ` \\ \": put the value in a file and use {}",
        if key == "SNAP_PASSWORD" { "SNAP_PASSWORD_FILE".to_string() } else { format!("{key}_FILE") }
    )))
}

/// Write a file only its owner can read, in a directory only its owner
/// can list.
fn write_private(path: &Path, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = path.parent().expect("a file path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|_| super::files::write_atomic(path, data, 0o600))
        .map_err(|e| CliError::new(exit::ERROR, format!("cannot write {}: {e}", path.display())))
}

fn write_public(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = path.parent().expect("a file path has a parent");
    std::fs::create_dir_all(dir)
        .and_then(|_| super::files::write_atomic(path, text.as_bytes(), 0o644))
        .map_err(|e| CliError::new(exit::ERROR, format!("cannot write {}: {e}", path.display())))
}

/// One word of an `ExecStart=` line: `%` and `$` would be expanded by
/// systemd, and whitespace or quotes would split or end the word.
fn systemd_word(s: &str) -> String {
    let s = s.replace('%', "%%").replace('$', "$$");
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || "\"'\\;".contains(c)) {
        return s;
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One word of a crontab command: shell single quotes, and `%` escaped,
/// since cron turns a bare `%` into a newline.
fn cron_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''")).replace('%', "\\%")
}

fn exec_line(binary: &Path, args: &[String]) -> String {
    std::iter::once(binary.display().to_string())
        .chain(args.iter().cloned())
        .map(|w| systemd_word(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn service_unit(layout: &Layout, description: &str, binary: &Path, commands: &[Vec<String>]) -> String {
    let mut text = format!(
        "# Written by `snap schedule install --name {name}`; `snap schedule remove --name {name}` removes it.\n\
         # Secrets are in {env} (mode 0600), never in this file.\n\
         [Unit]\n\
         Description={description}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         EnvironmentFile={env}\n",
        name = layout.name,
        env = layout.env_file.display().to_string().replace('%', "%%"),
    );
    // Each line runs only if the one before succeeded: no prune after a
    // failed backup.
    for c in commands {
        text.push_str(&format!("ExecStart={}\n", exec_line(binary, c)));
    }
    text.push_str("Nice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n");
    text
}

fn timer_unit(description: &str, calendar: &str, spread: &str) -> String {
    format!(
        "[Unit]\n\
         Description={description}\n\
         \n\
         [Timer]\n\
         OnCalendar={calendar}\n\
         # A run missed while the machine was off happens at the next boot.\n\
         Persistent=true\n\
         RandomizedDelaySec={spread}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

fn install_systemd(ctx: &Context, layout: &Layout, binary: &Path, jobs: &Jobs, a: &ScheduleInstallArgs) -> CliResult {
    let backup = layout.backup_unit();
    let check = layout.check_unit();
    let mut files = vec![
        (
            layout.unit_dir.join(format!("{backup}.service")),
            service_unit(layout, &format!("snap backup ({})", layout.name), binary, &jobs.backup),
        ),
        (
            layout.unit_dir.join(format!("{backup}.timer")),
            timer_unit(&format!("snap backup ({}) on schedule", layout.name), &a.on_calendar, "10min"),
        ),
    ];
    if let Some(c) = &jobs.check {
        files.push((
            layout.unit_dir.join(format!("{check}.service")),
            service_unit(layout, &format!("snap repository check ({})", layout.name), binary, std::slice::from_ref(c)),
        ));
        files.push((
            layout.unit_dir.join(format!("{check}.timer")),
            timer_unit(&format!("snap repository check ({}) on schedule", layout.name), &a.check_calendar, "1h"),
        ));
    } else {
        // A reinstall without the check drops the old one.
        for f in [format!("{check}.service"), format!("{check}.timer")] {
            let _ = std::fs::remove_file(layout.unit_dir.join(f));
        }
    }
    for (path, text) in &files {
        write_public(path, text)?;
    }
    let timers: Vec<String> = files
        .iter()
        .filter_map(|(p, _)| p.file_name()?.to_str().filter(|n| n.ends_with(".timer")).map(String::from))
        .collect();
    let enable = format!("systemctl --user daemon-reload && systemctl --user enable --now {}", timers.join(" "));
    let enabled = if a.no_enable {
        false
    } else {
        let reload = systemctl(&["daemon-reload"]);
        let mut args = vec!["enable", "--now"];
        args.extend(timers.iter().map(String::as_str));
        if let Err(e) = reload.and_then(|_| systemctl(&args)) {
            return Err(CliError::new(
                exit::ERROR,
                format!(
                    "the units are written to {}, but systemctl --user failed ({e}); in a login session with systemd, \
                     run: {enable}",
                    layout.unit_dir.display()
                ),
            ));
        }
        true
    };
    let linger = linger_enabled();
    if ctx.out.json {
        ctx.out.json(&json!({
            "mode": "systemd",
            "enabled": enabled,
            "env_file": layout.env_file,
            "log_file": layout.log_file,
            "units": files.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            "linger": linger,
        }));
    } else {
        println!("wrote {} (mode 0600: the secrets)", layout.env_file.display());
        for (p, _) in &files {
            println!("wrote {}", p.display());
        }
        println!("runs log to {} (and the journal: journalctl --user -u {backup})", layout.log_file.display());
        if enabled {
            println!("enabled: {}", timers.join(", "));
        } else {
            println!("not enabled yet; to enable: {enable}");
        }
    }
    if linger != Some(true) {
        let user = std::env::var("USER").unwrap_or_else(|_| "$USER".into());
        super::log::info(&format!(
            "note: user timers run only while you are logged in, unless lingering is on: sudo loginctl enable-linger {user}"
        ));
    }
    super::log::info("check the set-up with `snap doctor`; see the schedule with `snap schedule status`");
    Ok(exit::OK)
}

fn install_cron(ctx: &Context, layout: &Layout, binary: &Path, jobs: &Jobs, a: &ScheduleInstallArgs) -> CliResult {
    let command = |args: &Vec<String>| {
        std::iter::once(binary.display().to_string())
            .chain(args.iter().cloned())
            .map(|w| cron_word(&w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let load = format!("set -a; . {}; set +a;", cron_word(&layout.env_file.display().to_string()));
    let minute = layout.name.bytes().fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 60;
    let mut lines = vec![format!(
        "{} {load} {}",
        cron_schedule(&a.on_calendar, minute, "3")?,
        jobs.backup.iter().map(command).collect::<Vec<_>>().join(" && ")
    )];
    if let Some(c) = &jobs.check {
        lines.push(format!("{} {load} {}", cron_schedule(&a.check_calendar, minute, "5")?, command(c)));
    }
    if ctx.out.json {
        ctx.out
            .json(&json!({"mode": "cron", "env_file": layout.env_file, "log_file": layout.log_file, "crontab": lines}));
    } else {
        println!("wrote {} (mode 0600: the secrets)", layout.env_file.display());
        println!("systemd does not run this machine; add these lines with `crontab -e`:");
        println!();
        for l in &lines {
            println!("{l}");
        }
        println!();
        println!("runs log to {}", layout.log_file.display());
    }
    Ok(exit::OK)
}

/// A cron schedule for a systemd calendar keyword, or a five-field cron
/// expression given as is.
fn cron_schedule(calendar: &str, minute: u32, hour: &str) -> Result<String, CliError> {
    let fields = calendar.split_whitespace().count();
    Ok(match calendar {
        "hourly" => format!("{minute} * * * *"),
        "daily" => format!("{minute} {hour} * * *"),
        "weekly" => format!("{minute} {hour} * * 0"),
        "monthly" => format!("{minute} {hour} 1 * *"),
        _ if fields == 5 => calendar.to_string(),
        _ => {
            return Err(CliError::usage(format!(
                "without systemd, a schedule is hourly, daily, weekly, monthly or a five-field cron expression, \
                 not {calendar:?}"
            )))
        }
    })
}

/// Run `systemctl --user ARGS`; the first line of its complaint on failure.
fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().next().unwrap_or("failed").trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn linger_enabled() -> Option<bool> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let out = Command::new("loginctl")
        .args(["show-user", &uid.to_string(), "--property=Linger"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "Linger=yes" => Some(true),
        "Linger=no" => Some(false),
        _ => None,
    }
}

/// `systemctl --user show` properties as a map.
fn unit_properties(unit: &str, props: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = systemctl(&["show", unit, &format!("--property={props}")]).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect(),
    )
}

fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|s| s.to_string()).collect()
}

fn status(ctx: &Context, layout: &Layout) -> CliResult {
    let units: Vec<(PathBuf, bool)> = layout
        .unit_files()
        .into_iter()
        .map(|p| {
            let e = p.is_file();
            (p, e)
        })
        .collect();
    let env_exists = layout.env_file.is_file();
    if !env_exists && !units.iter().any(|(_, e)| *e) {
        return Err(CliError::new(
            exit::NOT_FOUND,
            format!("no schedule named {} (set one up with `snap schedule install`)", layout.name),
        ));
    }
    let env_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&layout.env_file).ok().map(|m| m.permissions().mode() & 0o777)
    };
    let mut timers = serde_json::Map::new();
    for t in layout.timers() {
        if let Some(p) = unit_properties(&t, "ActiveState,UnitFileState,NextElapseUSecRealtime,LastTriggerUSec") {
            timers.insert(t, p.into());
        }
    }
    let mut services = serde_json::Map::new();
    for s in [layout.backup_unit(), layout.check_unit()] {
        let s = format!("{s}.service");
        if let Some(p) = unit_properties(&s, "ActiveState,Result,ExecMainStatus,ExecMainExitTimestamp") {
            services.insert(s, p.into());
        }
    }
    let tail = log_tail(&layout.log_file, 8);
    let manager = !timers.is_empty();
    if ctx.out.json {
        ctx.out.json(&json!({
            "name": layout.name,
            "env_file": layout.env_file,
            "env_file_mode": env_mode.map(|m| format!("{m:o}")),
            "units": units.iter().map(|(p, e)| json!({"path": p, "exists": e})).collect::<Vec<_>>(),
            "systemd_reachable": manager,
            "timers": timers,
            "services": services,
            "log_file": layout.log_file,
            "log_tail": tail,
        }));
    } else {
        let mode = env_mode.map(|m| format!("mode {m:o}")).unwrap_or_else(|| "missing".into());
        println!("environment: {} ({mode})", layout.env_file.display());
        if env_mode.is_some_and(|m| m & 0o077 != 0) {
            super::log::warn(&format!("{} is readable by others: chmod 600 it", layout.env_file.display()));
        }
        for (p, e) in &units {
            println!("unit: {} ({})", p.display(), if *e { "present" } else { "absent" });
        }
        if !units.iter().any(|(_, e)| *e) {
            println!("no units: this schedule runs from cron (crontab -l)");
        } else if !manager {
            println!("systemd user manager: not reachable from here (no login session?)");
        }
        for (name, props) in timers.iter().chain(services.iter()) {
            let line: Vec<String> = props
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            println!("{name}: {}", line.join(" "));
        }
        println!("log: {}", layout.log_file.display());
        for l in &tail {
            println!("  {l}");
        }
    }
    Ok(exit::OK)
}

fn remove(ctx: &Context, layout: &Layout) -> CliResult {
    let present: Vec<PathBuf> = layout.unit_files().into_iter().filter(|p| p.is_file()).collect();
    if !present.is_empty() {
        // Stop first, so no run starts from a unit that is going away.
        let mut args = vec!["disable", "--now"];
        let timers = layout.timers();
        args.extend(timers.iter().map(String::as_str));
        if let Err(e) = systemctl(&args) {
            super::log::info(&format!("systemctl --user disable: {e}"));
        }
    }
    let mut removed = Vec::new();
    for p in present.iter().chain(std::iter::once(&layout.env_file).filter(|p| p.is_file())) {
        std::fs::remove_file(p)
            .map_err(|e| CliError::new(exit::ERROR, format!("cannot remove {}: {e}", p.display())))?;
        removed.push(p.clone());
    }
    if !present.is_empty() {
        let _ = systemctl(&["daemon-reload"]);
    }
    if removed.is_empty() {
        return Err(CliError::new(exit::NOT_FOUND, format!("no schedule named {}", layout.name)));
    }
    if ctx.out.json {
        ctx.out.json(&json!({"removed": removed, "log_file_kept": layout.log_file}));
    } else {
        for p in &removed {
            println!("removed {}", p.display());
        }
        if present.is_empty() {
            println!("remove the schedule's lines from your crontab too (crontab -e)");
        }
        println!("the log stays at {}", layout.log_file.display());
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_read_the_same_everywhere() {
        assert_eq!(env_line("A", "p@ss w$rd\"x").unwrap(), "A='p@ss w$rd\"x'");
        assert_eq!(env_line("A", "it's").unwrap(), "A=\"it's\"");
        assert!(env_line("A", "it's $HOME").is_err());
        assert!(env_line("A", "two\nlines").is_err());
    }

    /// The file as POSIX sh reads it (what cron runs) gives back every value.
    #[test]
    fn env_file_round_trips_through_sh_and_dotenv() {
        let env: Vec<(String, String)> = [
            ("SNAP_PASSWORD", "c0rrect horse $battery `staple` \\ \" #1"),
            ("SUPABASE_DB_URL", "postgres://postgres@db.example.com:5432/postgres?sslmode=require"),
            ("PGPASSWORD", "it's a secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let text = env_file_text(&env).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.env");
        std::fs::write(&file, &text).unwrap();
        for (k, v) in &env {
            let out = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("set -a; . '{}'; printf %s \"${k}\"", file.display()))
                .env_clear()
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), *v, "sh reads {k}");
        }
        let parsed: std::collections::HashMap<String, String> =
            dotenvy::from_path_iter(&file).unwrap().map(|r| r.unwrap()).collect();
        for (k, v) in &env {
            assert_eq!(&parsed[k], v, "dotenv reads {k}");
        }
    }

    #[test]
    fn exec_words_are_quoted_for_systemd() {
        assert_eq!(systemd_word("/usr/bin/snap"), "/usr/bin/snap");
        assert_eq!(systemd_word("5%"), "5%%");
        assert_eq!(systemd_word("a b"), "\"a b\"");
        assert_eq!(systemd_word("$HOME"), "$$HOME");
        assert_eq!(systemd_word("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(cron_word("5%"), "'5\\%'");
        assert_eq!(cron_word("it's"), "'it'\\''s'");
    }

    #[test]
    fn cron_schedules() {
        assert_eq!(cron_schedule("daily", 7, "3").unwrap(), "7 3 * * *");
        assert_eq!(cron_schedule("30 2 * * 1-5", 7, "3").unwrap(), "30 2 * * 1-5");
        assert!(cron_schedule("Mon *-*-* 03:00", 7, "3").is_err());
    }

    #[test]
    fn build_and_temp_folders_are_unstable() {
        assert!(unstable_location(Path::new("/home/u/src/snap/target/release/snap")).is_some());
        assert!(unstable_location(Path::new("/tmp/snap")).is_some());
        assert!(unstable_location(Path::new("/usr/local/bin/snap")).is_none());
    }
}
