//! `snap copy`: snapshots from one repository into another.

use std::sync::Arc;

use serde_json::json;

use super::args::CopyArgs;
use super::output::{bytes, exit, ProgressDisplay};
use super::{password, CliError, CliResult, Context};
use crate::repo::lock::LockKind;
use crate::repo::ops::copy;
use crate::repo::reader::read_threads;

pub(super) fn cmd_copy(ctx: &Context, a: &CopyArgs) -> CliResult {
    let from = a
        .from_repo
        .as_deref()
        .or(ctx.cli.repo.as_deref())
        .ok_or_else(|| CliError::usage("no source repository: use --from-repo, --repo or SNAP_REPOSITORY"))?;
    if from.trim_end_matches('/') == a.to_repo.trim_end_matches('/') {
        return Err(CliError::usage("--to-repo is the source repository itself"));
    }
    let src = ctx.open_at(from)?;
    let dst = ctx.open_other(&a.to_repo, password::destination_password)?;
    if src.config().id == dst.config().id {
        return Err(CliError::usage("the two locations hold the same repository"));
    }
    let _src_lock = ctx.lock(&src, LockKind::Shared, "copy (source)")?;
    let _dst_lock = ctx.lock(&dst, LockKind::Shared, "copy")?;
    let wanted = if a.snapshots.is_empty() {
        src.list_snapshots()?.0
    } else {
        a.snapshots.iter().map(|s| src.find_snapshot(s)).collect::<Result<Vec<_>, _>>()?
    };
    let out = ctx.out;
    let display = std::cell::RefCell::new(None);
    let report = copy::copy_snapshots(&src, &dst, &wanted, read_threads(&src), &|id, progress| {
        out.note(&format!("snap: copying snapshot {}", id.short()));
        *display.borrow_mut() = Some(ProgressDisplay::create(out, Arc::clone(&progress)));
    })?;
    drop(display.take());
    let bytes_added: u64 = report.copied.iter().map(|c| c.bytes_added).sum();
    ctx.record(json!({"snapshots_copied": report.copied.len(), "bytes_added": bytes_added}));
    if out.json {
        out.json(&serde_json::to_value(&report).expect("report serialises"));
    } else if !out.quiet {
        for c in &report.copied {
            println!(
                "copied {} as {}: {} files read, {} unchanged since an earlier copy, {} read, {} added",
                c.source.short(),
                c.copy.short(),
                c.files_read,
                c.files_reused,
                bytes(c.bytes_read),
                bytes(c.bytes_added)
            );
        }
        for (source, copy) in &report.already_present {
            println!("{} is already in the destination as {}", source.short(), copy.short());
        }
        println!("{} snapshot(s) copied, {} already present", report.copied.len(), report.already_present.len());
    }
    Ok(exit::OK)
}
