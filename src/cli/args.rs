//! The command line as typed (clap definitions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "snap", version, about = "Encrypted, deduplicating backups for Supabase projects and files")]
pub struct Cli {
    /// Repository location: a local directory, s3:https://ENDPOINT/BUCKET/PREFIX,
    /// or s3://BUCKET/PREFIX (AWS; credentials from the AWS_* variables or AWS_PROFILE)
    #[arg(short = 'r', long, env = "SNAP_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Do not keep a local copy of a remote repository's index and snapshot
    /// files (kept under SNAP_CACHE_DIR, XDG_CACHE_HOME/snap or ~/.cache/snap)
    #[arg(long, env = "SNAP_NO_CACHE", global = true)]
    pub no_cache: bool,
    /// Machine-readable JSON on standard output
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress or notes on standard error
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Open the repository with an exported master key instead of a password
    #[arg(long, env = "SNAP_MASTER_KEY_FILE", global = true, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// How long to wait for a conflicting lock, in seconds
    #[arg(long, default_value_t = 300, global = true, value_name = "SECONDS")]
    pub lock_wait: u64,
    /// Health-check URL: pinged at URL/start, then URL on success or
    /// URL/fail on failure (healthchecks.io style)
    #[arg(long, env = "SNAP_NOTIFY_URL", global = true, value_name = "URL")]
    pub notify_url: Option<String>,
    /// POST a JSON summary of the run (success or failure) to this URL
    #[arg(long, env = "SNAP_NOTIFY_WEBHOOK", global = true, value_name = "URL")]
    pub notify_webhook: Option<String>,
    /// Update this Prometheus textfile (for node_exporter) after the run
    #[arg(long, env = "SNAP_METRICS_FILE", global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Also append every note, warning and error, with the run's start and
    /// result, to this file
    #[arg(long, env = "SNAP_LOG_FILE", global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Format of --log-file lines (or of stderr, without --log-file)
    #[arg(long, env = "SNAP_LOG_FORMAT", global = true, value_enum, default_value = "human")]
    pub log_format: super::log::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// The subcommand's name, for notifications and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Create(_) => "create",
            Command::Snapshots => "snapshots",
            Command::Show { .. } => "show",
            Command::Ls { .. } => "ls",
            Command::Diff { .. } => "diff",
            Command::Stats => "stats",
            Command::Restore(_) => "restore",
            Command::Dump { .. } => "dump",
            Command::Verify(_) => "verify",
            Command::Check(_) => "check",
            Command::Repair(_) => "repair",
            Command::Key(_) => "key",
            Command::Forget(_) => "forget",
            Command::Prune(_) => "prune",
            Command::Policy(_) => "policy",
            Command::Unlock { .. } => "unlock",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
            Command::Doctor(_) => "doctor",
            Command::Schedule(_) => "schedule",
            Command::Copy(_) => "copy",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files, standard input, or a command's output into a new snapshot
    Create(Box<CreateArgs>),
    /// List snapshots, oldest first
    Snapshots,
    /// Print a snapshot's manifest (time, source, summary, and what an
    /// application recorded, e.g. tables and buckets)
    Show {
        /// Snapshot id (unique prefix of 6+ hex digits) or `latest`
        snapshot: String,
    },
    /// List the files of a snapshot
    Ls {
        /// Snapshot id (unique prefix of 6+ hex digits) or `latest`
        snapshot: String,
        /// Directory inside the snapshot
        path: Option<String>,
    },
    /// Show what changed between two snapshots
    Diff { first: String, second: String },
    /// Repository statistics
    Stats,
    /// Restore a snapshot's files into a directory
    Restore(Box<RestoreArgs>),
    /// Copy snapshots into another repository (its own keys and location:
    /// off-site, S3), without reading the backed-up project again
    Copy(CopyArgs),
    /// Write one file of a snapshot to standard output
    Dump {
        snapshot: String,
        /// A file of the snapshot (or use --table)
        #[arg(required_unless_present = "table")]
        path: Option<String>,
        /// One table's rows of a project snapshot (SCHEMA.TABLE)
        #[arg(long, value_name = "SCHEMA.TABLE", conflicts_with = "path")]
        table: Option<String>,
        /// Format of --table rows: copy (as stored), csv or json
        #[arg(long, default_value = "csv", value_parser = ["copy", "csv", "json"])]
        format: String,
    },
    /// Compare a live project with a snapshot: rows, roles, grants,
    /// policies, triggers, objects
    Verify(Box<VerifyArgs>),
    /// Verify the repository's structure and, optionally, its data
    Check(CheckArgs),
    /// Rebuild damaged repository metadata
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Manage the passwords (keys) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Remove snapshots: the named ones, or those the keep rules do not keep
    /// (the space is given back by a later prune)
    Forget(Box<ForgetArgs>),
    /// Apply the keep rules (given, or saved with `snap policy set`) and give
    /// back the space of data no remaining snapshot uses
    Prune(Box<PruneArgs>),
    /// Save, show or clear the repository's retention policy
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Remove stale locks (or all locks with --remove-all)
    Unlock {
        #[arg(long)]
        remove_all: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `snap man > /usr/local/share/man/man1/snap.1`
    Man,
    /// Check everything a backup and a restore need, with a fix for each
    /// failure (exit code 1 if any check fails)
    Doctor(Box<DoctorArgs>),
    /// Run backups on a timer: systemd user units, or a crontab line
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Write a service and timer that run `snap create` (then `snap prune`
    /// with the saved policy, with --prune) and a weekly partial
    /// `snap check`; secrets go to a 0600 environment file
    Install(Box<ScheduleInstallArgs>),
    /// Show the schedule's files, next and last runs, and its log's tail
    Status(ScheduleName),
    /// Stop and remove the schedule's units and environment file (the log stays)
    Remove(ScheduleName),
}

#[derive(Args, Debug)]
pub struct ScheduleName {
    /// Name of the schedule: units are snap-NAME.*, so several projects can
    /// each have one
    #[arg(long, default_value = "backup")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct ScheduleInstallArgs {
    #[command(flatten)]
    pub name: ScheduleName,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// When to back up, as a systemd calendar expression (daily, hourly,
    /// "*-*-* 03:30", …)
    #[arg(long, default_value = "daily", value_name = "WHEN")]
    pub on_calendar: String,
    /// After each backup, prune with the policy saved by `snap policy set`
    #[arg(long)]
    pub prune: bool,
    /// When to run `snap check --read-data-subset`
    #[arg(long, default_value = "weekly", value_name = "WHEN")]
    pub check_calendar: String,
    /// Share of the packs the scheduled check reads
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub check_subset: String,
    /// No scheduled check
    #[arg(long)]
    pub no_check: bool,
    /// The snap binary the schedule runs (default: this one)
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// systemd user units, or a crontab line (default: systemd when it runs
    /// this machine)
    #[arg(long, value_enum, default_value = "auto")]
    pub mode: ScheduleMode,
    /// Write the files but do not enable the timers (for images built now
    /// and booted later)
    #[arg(long)]
    pub no_enable: bool,
    /// Arguments for `snap create` (e.g. -- --only db --tag nightly, or
    /// paths to back up instead of a project)
    #[arg(last = true, value_name = "CREATE ARGS")]
    pub create_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleMode {
    Auto,
    Systemd,
    Cron,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Check only the database or only Storage (default: whatever is configured)
    #[arg(long, value_name = "db|storage")]
    pub only: Option<String>,
    /// Fail when the newest snapshot of the project is older than this
    #[arg(long, default_value = "26h", value_name = "DURATION")]
    pub max_age: String,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Argon2id memory per key derivation, in KiB
    #[arg(long, default_value_t = 64 * 1024)]
    pub kdf_memory: u32,
    /// Argon2id iterations (default: tuned to about 0.2 s of one core's work here)
    #[arg(long)]
    pub kdf_iterations: Option<u32>,
    /// Target pack size in MiB
    #[arg(long, default_value_t = 16)]
    pub pack_size: u32,
    /// zstd compression level (1-22)
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Files and directories to back up
    pub paths: Vec<PathBuf>,
    /// Store standard input as one file called NAME
    #[arg(long, value_name = "NAME", conflicts_with = "stdin_from_command")]
    pub stdin: Option<String>,
    /// Store the output of the command after `--` as NAME; no snapshot if it fails
    #[arg(long, value_name = "NAME")]
    pub stdin_from_command: Option<String>,
    /// The command for --stdin-from-command
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Host name to record (default: this host)
    #[arg(long)]
    pub host: Option<String>,
    /// Time to record instead of now (RFC 3339, or "YYYY-MM-DD HH:MM:SS" local)
    #[arg(long)]
    pub time: Option<String>,
    /// Leave out matching paths (a pattern with / matches the absolute path,
    /// one without matches any name)
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Take files unchanged since this snapshot from it unread (default: the
    /// latest snapshot of the same paths from this host)
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "force")]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Back up only this part of the project: db or storage
    #[arg(long, value_name = "PART")]
    pub only: Option<String>,
    /// Leave this table's rows out (SCHEMA.TABLE, repeatable)
    #[arg(long = "exclude-table", value_name = "SCHEMA.TABLE")]
    pub exclude_tables: Vec<String>,
    /// Leave this Storage bucket out (repeatable)
    #[arg(long = "exclude-bucket", value_name = "NAME")]
    pub exclude_buckets: Vec<String>,
    /// Database connections streaming tables in parallel
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Storage objects downloaded at once
    #[arg(long, default_value_t = 8)]
    pub storage_concurrency: usize,
    /// Keep a snapshot when some objects cannot be read (they are listed in
    /// it) and exit with code 3 instead of failing
    #[arg(long)]
    pub allow_partial: bool,
}

/// Where the Supabase project is (secrets come only from the environment,
/// an env file, *_FILE variables or a prompt).
#[derive(Args, Debug, Clone, Default)]
pub struct ProjectArgs {
    /// Env file with the project settings (default: .env in the working directory)
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Postgres connection string (no password here: use PGPASSWORD or an env file)
    #[arg(long = "db-url", value_name = "URL")]
    pub db_url: Option<String>,
    /// Project URL, e.g. https://<ref>.supabase.co
    #[arg(long = "supabase-url", value_name = "URL")]
    pub supabase_url: Option<String>,
    /// Storage API base URL (default: $SUPABASE_URL/storage/v1)
    #[arg(long = "storage-url", value_name = "URL")]
    pub storage_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id (unique prefix of 6+ hex digits) or `latest`; on a
    /// terminal, leave it out to pick from a list
    pub snapshot: Option<String>,
    /// Write the snapshot's files into this directory instead of restoring
    /// a project (created if missing)
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// With --target: restore only paths matching this glob (repeatable)
    #[arg(long = "include", value_name = "PATTERN")]
    pub include: Vec<String>,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Restore only this part of the project: db or storage
    #[arg(long, value_name = "PART")]
    pub only: Option<String>,
    /// Replace just this table's rows (SCHEMA.TABLE, repeatable)
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Replace just the rows of this schema's tables (repeatable)
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,
    /// Restore just this bucket (repeatable)
    #[arg(long = "bucket", value_name = "NAME")]
    pub buckets: Vec<String>,
    /// Leave this table's rows out (SCHEMA.TABLE, repeatable)
    #[arg(long = "exclude-table", value_name = "SCHEMA.TABLE")]
    pub exclude_tables: Vec<String>,
    /// Print what would be dropped, created, loaded, uploaded and deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write the cleaned SQL the restore runs into this directory
    #[arg(long, value_name = "DIR")]
    pub emit_sql: Option<PathBuf>,
    /// Do not ask for confirmation (for scripts)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Restore pg_cron jobs inactive
    #[arg(long)]
    pub disable_cron: bool,
    /// Storage objects uploaded at once
    #[arg(long, default_value_t = 8)]
    pub storage_concurrency: usize,
    /// Afterwards, compare the project with the snapshot (as `snap verify`)
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Snapshot id (unique prefix of 6+ hex digits) or `latest`
    pub snapshot: String,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Verify only this part: db or storage
    #[arg(long, value_name = "PART")]
    pub only: Option<String>,
    /// Objects: compare sizes and etags only (no download)
    #[arg(long)]
    pub quick: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read and verify every pack
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read and verify a random share of the packs, e.g. 10%
    #[arg(long, value_name = "PERCENT")]
    pub read_data_subset: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index from the pack headers
    Index,
    /// Find snapshots that need missing or damaged data; with --rewrite,
    /// replace them by snapshots without the lost files (recorded in the
    /// snapshot)
    Snapshots {
        /// Read every pack to find damaged blobs too (not only missing packs)
        #[arg(long)]
        read_data: bool,
        /// Write the repaired snapshots and remove the damaged ones
        #[arg(long)]
        rewrite: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Add a password (from SNAP_NEW_PASSWORD_FILE / SNAP_NEW_PASSWORD, or asked)
    Add {
        #[arg(long, default_value_t = 64 * 1024)]
        kdf_memory: u32,
        #[arg(long)]
        kdf_iterations: Option<u32>,
        /// A key for a backup host: create, restore and check work; forget,
        /// prune, repair, key removal and config changes are refused
        #[arg(long)]
        append_only: bool,
    },
    /// List the keys
    List,
    /// Remove a key by id (prefix)
    Remove { id: String },
    /// Change the password that opened the repository
    Passwd {
        #[arg(long, default_value_t = 64 * 1024)]
        kdf_memory: u32,
        #[arg(long)]
        kdf_iterations: Option<u32>,
    },
    /// Print the master key for a paper copy (keep it safe: it opens the repository)
    Export,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source repository (default: --repo / SNAP_REPOSITORY); opened with
    /// SNAP_PASSWORD* or --master-key-file
    #[arg(long, value_name = "LOCATION")]
    pub from_repo: Option<String>,
    /// Destination repository, opened with SNAP_TO_PASSWORD_FILE,
    /// SNAP_TO_PASSWORD_COMMAND or SNAP_TO_PASSWORD (or asked)
    #[arg(long, env = "SNAP_TO_REPOSITORY", value_name = "LOCATION")]
    pub to_repo: String,
    /// Snapshots to copy (ids or `latest`); all of them when none are given.
    /// Snapshots the destination already has a copy of are skipped
    pub snapshots: Vec<String>,
}

/// Keep rules shared by `forget`, `prune` and `policy set`.
#[derive(Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots of each group
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// … of the last N days
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// … of the last N ISO weeks
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// … of the last N months
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// … of the last N years
    #[arg(long, default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot within this long of the group's newest (e.g. 14d, 1y6m)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Group snapshots by any of host, source, tags [default: host,source]
    #[arg(long)]
    pub group_by: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove (ids or `latest`)
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Print what would be kept and removed (and why); remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Then give back the space only the removed snapshots used, as `snap prune --no-forget` would
    #[arg(long)]
    pub prune: bool,
    /// With --prune: repack a pack when more than this share of it is unused
    #[arg(long, default_value = "5%", value_name = "PERCENT", requires = "prune")]
    pub max_unused: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Forget no snapshot: only give back the space of data no snapshot uses
    #[arg(long)]
    pub no_forget: bool,
    /// Repack a pack when more than this share of it is unused
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Print what would be kept, removed, repacked and freed; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Save keep rules in the repository, for `snap prune` and `snap forget` without rules
    Set(KeepArgs),
    /// Print the saved keep rules
    Show,
    /// Remove the saved keep rules
    Clear,
}
