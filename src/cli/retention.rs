//! `snap forget`, `snap prune` and `snap policy`: which snapshots to keep,
//! and giving back the space of the others.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::args::{ForgetArgs, KeepArgs, PolicyCommand, PruneArgs};
use super::output::{bytes, exit, local_time};
use super::{CliError, CliResult, Context};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::id::Id;
use crate::repo::lock::LockKind;
use crate::repo::ops::forget::{self, GroupBy, SavedPolicy};
use crate::repo::ops::prune::{self, PruneOptions, PruneReport};
use crate::repo::reader::default_threads;
use crate::repo::retention::{parse_duration, Decision, Policy};
use crate::repo::Repository;

const DEFAULT_GROUP_BY: &str = "host,source";

fn policy_from(keep: &KeepArgs) -> Result<Option<SavedPolicy>, CliError> {
    let policy = Policy {
        last: keep.keep_last,
        hourly: keep.keep_hourly,
        daily: keep.keep_daily,
        weekly: keep.keep_weekly,
        monthly: keep.keep_monthly,
        yearly: keep.keep_yearly,
        within_s: keep.keep_within.as_deref().map(parse_duration).transpose().map_err(CliError::usage)?.unwrap_or(0),
        tags: keep.keep_tags.clone(),
    };
    if policy.is_empty() {
        if keep.group_by.is_some() {
            return Err(CliError::usage("--group-by needs keep rules (--keep-last, --keep-daily, …)"));
        }
        return Ok(None);
    }
    let group_by = keep.group_by.clone().unwrap_or_else(|| DEFAULT_GROUP_BY.to_string());
    GroupBy::parse(&group_by)?;
    Ok(Some(SavedPolicy { keep: policy, group_by }))
}

/// Rules from the command line, else the saved ones, else a refusal: a
/// command that would remove every snapshot is never run by accident.
fn effective_policy(repo: &Repository, keep: &KeepArgs) -> Result<SavedPolicy, CliError> {
    if let Some(p) = policy_from(keep)? {
        return Ok(p);
    }
    forget::saved_policy(repo)?.ok_or_else(|| {
        CliError::usage(
            "no keep rule given and none saved: pass --keep-last, --keep-daily, … or save a policy with \
             `snap policy set`; refusing to remove every snapshot",
        )
    })
}

type Plan = Vec<(Decision, Snapshot)>;

fn decide(repo: &Repository, policy: &SavedPolicy) -> Result<Plan, CliError> {
    Ok(forget::plan(repo, &policy.keep, GroupBy::parse(&policy.group_by)?)?)
}

fn plan_json(plan: &Plan) -> Vec<serde_json::Value> {
    plan.iter()
        .map(|(d, s)| {
            json!({"id": d.id, "time": s.time, "host": s.host, "source": s.source.describe(), "tags": s.tags,
                   "group": d.group, "keep": d.keep(), "reasons": d.reasons})
        })
        .collect()
}

fn print_plan(plan: &Plan) {
    let mut group = None;
    for (d, s) in plan {
        if group.as_deref() != Some(d.group.as_str()) {
            println!("group: {}", if d.group.is_empty() { "(all)" } else { &d.group });
            group = Some(d.group.clone());
        }
        println!(
            "  {} {}  {}  {}",
            if d.keep() { "keep  " } else { "remove" },
            d.id.short(),
            local_time(&s.time),
            d.reasons.join(", ")
        );
    }
}

pub(super) fn cmd_forget(ctx: &Context, a: &ForgetArgs) -> CliResult {
    let max_unused = parse_percent("--max-unused", &a.max_unused)?;
    let repo = ctx.open()?;
    // With --prune, the prune's own lock: one opening of the repository
    // (one key derivation) for both steps.
    let lock = if a.prune {
        ctx.lock_scoped(&repo, LockKind::Shared, "prune", Some("prune"))?
    } else {
        ctx.lock(&repo, LockKind::Shared, "forget")?
    };
    let (remove, report): (Vec<Id>, Vec<serde_json::Value>) = if a.snapshots.is_empty() {
        let policy = effective_policy(&repo, &a.keep)?;
        let plan = decide(&repo, &policy)?;
        if !ctx.out.json && !ctx.out.quiet {
            print_plan(&plan);
        }
        (plan.iter().filter(|(d, _)| !d.keep()).map(|(d, _)| d.id).collect(), plan_json(&plan))
    } else {
        if policy_from(&a.keep)?.is_some() {
            return Err(CliError::usage("give snapshot ids or keep rules, not both"));
        }
        let mut ids = Vec::new();
        for spec in &a.snapshots {
            ids.push(repo.find_snapshot(spec)?.0);
        }
        (ids.clone(), ids.iter().map(|id| json!({"id": id, "keep": false, "reasons": []})).collect())
    };
    if !a.dry_run {
        forget::remove(&repo, &remove)?;
    }
    let pruned = if a.prune { Some(give_back_space(ctx, &repo, lock, max_unused, a.dry_run, &remove)?) } else { None };
    if ctx.out.json {
        let mut v =
            json!({"dry_run": a.dry_run, "snapshots": report, "removed": if a.dry_run { 0 } else { remove.len() }});
        if let Some(r) = &pruned {
            v["prune"] = json!(r);
        }
        ctx.out.json(&v);
    } else if !ctx.out.quiet {
        match &pruned {
            Some(r) => print_report(r, remove.len()),
            None => {
                let verb = if a.dry_run { "would remove" } else { "removed" };
                println!("{verb} {} snapshot(s); `snap prune` gives back the space only they used", remove.len());
            }
        }
    }
    if let Some(why) = pruned.as_ref().and_then(|r| r.deferred.as_ref()) {
        super::log::warn(&format!("space not yet given back: {why}"));
    }
    Ok(exit::OK)
}

/// Prune's second step, under its scoped lock: delete or repack packs no
/// snapshot needs. In a dry run, `forgotten` still exists and is ignored.
fn give_back_space(
    ctx: &Context,
    repo: &Arc<Repository>,
    lock: crate::repo::lock::LockGuard,
    max_unused: f64,
    dry_run: bool,
    forgotten: &[Id],
) -> Result<PruneReport, CliError> {
    let opts = PruneOptions {
        max_unused,
        dry_run,
        threads: default_threads(),
        ignore_snapshots: if dry_run { forgotten.iter().copied().collect() } else { HashSet::new() },
    };
    let wait = Duration::from_secs(ctx.cli.lock_wait);
    let out = ctx.out;
    let repo_for_lock: Arc<Repository> = repo.clone();
    let mut take_exclusive = || -> crate::repo::Result<Box<dyn std::any::Any>> {
        let guard = lock.upgrade(&repo_for_lock, "prune (deleting)", wait, &mut |m| out.note(&format!("snap: {m}")))?;
        Ok(Box::new(guard))
    };
    Ok(prune::prune(repo, &opts, &mut take_exclusive, &mut |m| out.note(&format!("snap: {m}")))?)
}

/// A percentage flag (`5%` or `5`) as a fraction in 0..=1.
pub(super) fn parse_percent(flag: &str, s: &str) -> Result<f64, CliError> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| CliError::usage(format!("{flag} takes a percentage like 10%, not {s:?}")))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(CliError::usage(format!("{flag} must be between 0% and 100%")));
    }
    Ok(n / 100.0)
}

pub(super) fn cmd_prune(ctx: &Context, a: &PruneArgs) -> CliResult {
    let max_unused = parse_percent("--max-unused", &a.max_unused)?;
    if a.no_forget && policy_from(&a.keep)?.is_some() {
        return Err(CliError::usage("--no-forget and keep rules contradict each other"));
    }
    let repo = ctx.open()?;
    // Shared, so backups run alongside; scoped, so two prunes never race.
    let lock = ctx.lock_scoped(&repo, LockKind::Shared, "prune", Some("prune"))?;

    let plan = if a.no_forget { Vec::new() } else { decide(&repo, &effective_policy(&repo, &a.keep)?)? };
    let forgotten: Vec<Id> = plan.iter().filter(|(d, _)| !d.keep()).map(|(d, _)| d.id).collect();
    if !ctx.out.json && !ctx.out.quiet && !plan.is_empty() {
        print_plan(&plan);
    }
    if !a.dry_run {
        // Snapshot files go first: from here on their data is unreferenced.
        forget::remove(&repo, &forgotten)?;
        crate::repo::failpoint::hit("prune-forgotten");
    }

    let report = give_back_space(ctx, &repo, lock, max_unused, a.dry_run, &forgotten)?;

    ctx.record(json!({"forgotten": forgotten.len(), "bytes_deleted": report.bytes_deleted,
        "bytes_written": report.bytes_written, "deferred": report.deferred}));
    if ctx.out.json {
        ctx.out.json(&json!({"dry_run": a.dry_run, "snapshots": plan_json(&plan),
            "forgotten": forgotten.len(), "prune": report}));
    } else if !ctx.out.quiet {
        print_report(&report, forgotten.len());
    }
    if let Some(why) = &report.deferred {
        super::log::warn(&format!("space not yet given back: {why}"));
    }
    Ok(exit::OK)
}

fn print_report(r: &PruneReport, forgotten: usize) {
    let (would, deleted, repacked) =
        if r.dry_run { ("would ", "would be deleted", "to repack") } else { ("", "deleted", "repacked") };
    println!("{}{} {forgotten} snapshot(s); {} kept", would, if r.dry_run { "remove" } else { "removed" }, r.snapshots);
    println!(
        "packs: {} total, {} kept, {} {repacked} ({} of used data), {} unused, {} not indexed",
        r.packs,
        r.packs_kept,
        r.packs_repack,
        bytes(r.bytes_repacked),
        r.packs_unused,
        r.packs_unindexed
    );
    if r.temporaries_removed > 0 {
        println!("{} temporary file(s) of interrupted runs removed", r.temporaries_removed);
    }
    if r.packs_rescued > 0 {
        println!("{} pack(s) kept after all: a backup that ran meanwhile uses them", r.packs_rescued);
    }
    println!(
        "repository: {} before, {} unused; {} {deleted}, {} written; {} after",
        bytes(r.bytes_before),
        bytes(r.bytes_unused),
        bytes(r.bytes_deleted),
        bytes(r.bytes_written),
        bytes(r.bytes_after)
    );
}

pub(super) fn cmd_policy(ctx: &Context, c: &PolicyCommand) -> CliResult {
    let repo = ctx.open()?;
    let shown = match c {
        PolicyCommand::Show => forget::saved_policy(&repo)?,
        PolicyCommand::Set(keep) => {
            let policy = policy_from(keep)?.ok_or_else(|| {
                CliError::usage("give at least one keep rule (--keep-last, --keep-daily, --keep-within, …)")
            })?;
            save(ctx, repo, Some(&policy))?;
            Some(policy)
        }
        PolicyCommand::Clear => {
            save(ctx, repo, None)?;
            None
        }
    };
    if ctx.out.json {
        ctx.out.json(&json!({"policy": shown}));
    } else if !ctx.out.quiet {
        match &shown {
            None => println!("no retention policy saved"),
            Some(p) => println!("{}", describe(p)),
        }
    }
    Ok(exit::OK)
}

fn save(ctx: &Context, repo: Arc<Repository>, policy: Option<&SavedPolicy>) -> Result<(), CliError> {
    let _lock = ctx.lock(&repo, LockKind::Exclusive, "policy")?;
    let mut repo = Arc::try_unwrap(repo).map_err(|_| CliError::usage("repository is in use"))?;
    forget::save_policy(&mut repo, policy)?;
    Ok(())
}

fn describe(p: &SavedPolicy) -> String {
    let k = &p.keep;
    let mut parts = Vec::new();
    for (n, what) in [
        (k.last, "last"),
        (k.hourly, "hourly"),
        (k.daily, "daily"),
        (k.weekly, "weekly"),
        (k.monthly, "monthly"),
        (k.yearly, "yearly"),
    ] {
        if n > 0 {
            parts.push(format!("--keep-{what} {n}"));
        }
    }
    if k.within_s > 0 {
        parts.push(format!("--keep-within {}s", k.within_s));
    }
    for t in &k.tags {
        parts.push(format!("--keep-tag {t}"));
    }
    format!("{} --group-by {}", parts.join(" "), p.group_by)
}
