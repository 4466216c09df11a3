//! `snap doctor`: everything a backup and a restore need, checked in one
//! go, each failure with the fix. The repository checks are here; the
//! project's are in `supabase::preflight`.

use serde_json::json;

use super::output::{bytes, exit};
use super::{args, CliError, CliResult, Context};
use crate::repo::format::snapshot::{Snapshot, Source};
use crate::repo::id::Id;
use crate::repo::retention::parse_duration;
use crate::supabase::preflight::{check_database, check_storage, Finding, Status};
use crate::supabase::project::{load_project, Parts, Project};
use crate::supabase::settings::SettingsSource;

/// Snapshots whose sizes say how much room the next backup may need.
const RECENT_SNAPSHOTS: usize = 10;
const MIN_FREE: u64 = 64 << 20;
const COMFORTABLE_FREE: u64 = 1 << 30;

pub fn cmd_doctor(ctx: &Context, a: &args::DoctorArgs) -> CliResult {
    let max_age_s = parse_duration(&a.max_age).map_err(|e| CliError::usage(format!("--max-age: {e}")))?;
    let parts = Parts::parse(a.only.as_deref())?;
    let (project, mut db_findings, mut storage_findings) = project_settings(a, parts);
    let identity = project.as_ref().map(Project::identity).filter(|i| !i.is_empty());

    let mut findings = repository_checks(ctx, identity.as_deref(), max_age_s);
    if let Some(p) = &project {
        let rt = crate::supabase::runtime()?;
        if let Some(db) = &p.db {
            db_findings.extend(rt.block_on(check_database(db)));
        }
        if let Some(st) = &p.storage {
            storage_findings.extend(rt.block_on(check_storage(st)));
        }
    }
    findings.extend(db_findings);
    findings.extend(storage_findings);

    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    if ctx.out.json {
        ctx.out.json(&json!({"ok": failed == 0, "failed": failed, "checks": findings}));
    } else {
        print_table(&findings);
        if failed == 0 {
            println!("all checks passed");
        } else {
            println!("{failed} check(s) failed");
        }
    }
    ctx.record(json!({"checks_failed": failed}));
    if failed == 0 {
        Ok(exit::OK)
    } else {
        Err(CliError::new(exit::ERROR, format!("{failed} doctor check(s) failed")).after_json())
    }
}

fn print_table(findings: &[Finding]) {
    let width = findings.iter().map(|f| f.check.len()).max().unwrap_or(0);
    for f in findings {
        let status = match f.status {
            Status::Pass => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        println!("{status:<4}  {:<width$}  {}", f.check, f.detail);
        if let (Some(fix), Status::Fail | Status::Warn) = (&f.fix, f.status) {
            println!("      {:<width$}  fix: {fix}", "");
        }
    }
}

/// Which parts of the project are configured, loaded. A part that is not
/// configured is skipped unless `--only` asked for it.
fn project_settings(a: &args::DoctorArgs, parts: Parts) -> (Option<Project>, Vec<Finding>, Vec<Finding>) {
    let (mut db_out, mut storage_out) = (Vec::new(), Vec::new());
    let source = match SettingsSource::load(a.project.env_file.as_deref()) {
        Ok(s) => s,
        Err(e) => return (None, vec![Finding::fail("project settings", e.to_string(), "fix the env file")], vec![]),
    };
    let set = |flag: &Option<String>, var: &str| flag.is_some() || matches!(source.get(var), Ok(Some(_)));
    let p = &a.project;
    let has_db = set(&p.db_url, "SUPABASE_DB_URL");
    let has_storage = set(&p.storage_url, "SUPABASE_STORAGE_URL") || set(&p.supabase_url, "SUPABASE_URL");
    let want_db = parts.db() && (has_db || parts == Parts::Db);
    let want_storage = parts.storage() && (has_storage || parts == Parts::Storage);
    if parts.db() && !want_db {
        db_out.push(Finding::skip("database", "no database configured (SUPABASE_DB_URL)"));
    }
    if parts.storage() && !want_storage {
        storage_out.push(Finding::skip("storage api", "no Storage configured (SUPABASE_URL or SUPABASE_STORAGE_URL)"));
    }
    let flags = super::project::url_flags(p);
    let mut project = Project { url: None, db: None, storage: None };
    for (wanted, part, check) in [(want_db, Parts::Db, "database"), (want_storage, Parts::Storage, "storage api")] {
        if !wanted {
            continue;
        }
        match load_project(&source, &flags, part) {
            Ok(loaded) => {
                project.url = project.url.or(loaded.url);
                project.db = project.db.or(loaded.db);
                project.storage = project.storage.or(loaded.storage);
            }
            Err(e) => {
                let out = if part == Parts::Db { &mut db_out } else { &mut storage_out };
                out.push(Finding::fail(check, e.to_string(), format!("set it in {}", source.describe())));
            }
        }
    }
    let any = project.db.is_some() || project.storage.is_some();
    (any.then_some(project), db_out, storage_out)
}

fn repository_checks(ctx: &Context, identity: Option<&str>, max_age_s: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let skip_rest = |out: &mut Vec<Finding>, why: &str| {
        for name in ["password", "free space", "newest snapshot"] {
            out.push(Finding::skip(name, why));
        }
    };
    let Some(location) = ctx.cli.repo.as_deref() else {
        out.push(Finding::fail("repository", "no repository given", "set SNAP_REPOSITORY or pass --repo"));
        skip_rest(&mut out, "no repository");
        return out;
    };
    let repo = match ctx.open() {
        Ok(r) => r,
        Err(e) if e.code == exit::WRONG_PASSWORD || e.code == exit::USAGE => {
            out.push(Finding::pass("repository", location.to_string()));
            let fix = if e.code == exit::WRONG_PASSWORD {
                "check SNAP_PASSWORD_FILE, SNAP_PASSWORD_COMMAND or SNAP_PASSWORD (the first one set is used)"
            } else {
                "give the password in SNAP_PASSWORD_FILE, SNAP_PASSWORD_COMMAND or SNAP_PASSWORD"
            };
            out.push(Finding::fail("password", e.message, fix));
            out.push(Finding::skip("free space", "the repository cannot be opened"));
            out.push(Finding::skip("newest snapshot", "the repository cannot be opened"));
            return out;
        }
        Err(e) => {
            let (detail, fix) = if e.code == exit::NO_REPOSITORY {
                (format!("no repository at {location}"), "create one with `snap init`, or correct SNAP_REPOSITORY")
            } else {
                (e.message, "check the path, its permissions and the disk")
            };
            out.push(Finding::fail("repository", detail, fix));
            skip_rest(&mut out, "no repository");
            return out;
        }
    };
    out.push(Finding::pass("repository", format!("{location} (repository {})", repo.config().id.short())));
    out.push(Finding::pass("password", "opens the repository"));
    let snapshots = match repo.list_snapshots() {
        Ok((ok, _)) => ok,
        Err(e) => {
            out.push(Finding::fail("newest snapshot", format!("cannot list snapshots: {e}"), "run `snap check`"));
            return out;
        }
    };
    let ours: Vec<_> = snapshots
        .iter()
        .filter(|(_, s)| match (identity, &s.source) {
            (Some(id), Source::Project { url }) => url == id,
            (Some(_), _) => false,
            (None, _) => true,
        })
        .collect();
    out.push(free_space(repo.backend().free_space(), &ours));
    out.push(newest(identity, &ours, max_age_s));
    out
}

fn free_space(free: Option<u64>, ours: &[&(Id, Snapshot)]) -> Finding {
    let name = "free space";
    let Some(free) = free else {
        return Finding::skip(name, "not known for this storage");
    };
    // A backup like the recent ones, plus its index and a prune's repack.
    let largest = ours.iter().rev().take(RECENT_SNAPSHOTS).map(|(_, s)| s.summary.bytes_added).max().unwrap_or(0);
    let detail = format!("{} free; the largest recent backup added {}", bytes(free), bytes(largest));
    let fix = "free disk space, prune with a tighter policy (`snap prune`), or move the repository";
    if free < MIN_FREE.max(largest + largest / 2) {
        Finding::fail(name, detail, fix)
    } else if free < COMFORTABLE_FREE.max(largest * 3) {
        Finding::warn(name, detail, fix)
    } else {
        Finding::pass(name, detail)
    }
}

fn newest(identity: Option<&str>, ours: &[&(Id, Snapshot)], max_age_s: u64) -> Finding {
    let name = "newest snapshot";
    let of = identity.map(|i| format!(" of {i}")).unwrap_or_default();
    let fix = "run `snap create`; if a schedule should have, see `snap schedule status` and its log";
    let Some((id, snap)) = ours.last() else {
        return Finding::fail(name, format!("no snapshot{of} yet"), fix);
    };
    let age = (chrono::Utc::now() - snap.time).num_seconds().max(0) as u64;
    let detail = format!("{}{of} is {} old", id.short(), human_age(age));
    if age > max_age_s {
        Finding::fail(name, format!("{detail}, older than --max-age {}", human_age(max_age_s)), fix)
    } else {
        Finding::pass(name, detail)
    }
}

fn human_age(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(5), "5 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(26 * 3600), "26 h");
        assert_eq!(human_age(3 * 86_400 + 5), "3 days");
    }

    #[test]
    fn free_space_is_judged_against_recent_backups() {
        assert_eq!(free_space(None, &[]).status, Status::Skip);
        assert_eq!(free_space(Some(10 << 20), &[]).status, Status::Fail);
        assert_eq!(free_space(Some(100 << 30), &[]).status, Status::Pass);
        assert_eq!(free_space(Some(512 << 20), &[]).status, Status::Warn);
    }
}
