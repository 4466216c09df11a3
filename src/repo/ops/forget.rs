//! `snap forget`: remove named snapshots, or those a retention policy does
//! not keep. Only snapshot files are removed; the data they alone used is
//! given back by `snap prune`.

use super::super::error::{Error, Result};
use super::super::format::snapshot::Snapshot;
use super::super::id::Id;
use super::super::repository::Repository;
use super::super::retention::{apply, Candidate, Decision, Policy};

/// What snapshots are grouped by for retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub source: bool,
    pub tags: bool,
}

impl GroupBy {
    /// Parse `host,source,tags` (any subset; empty: one group).
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy { host: false, source: false, tags: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "source" | "paths" | "project" => g.source = true,
                "tags" => g.tags = true,
                other => return Err(Error::Invalid(format!("--group-by takes host, source and tags, not {other:?}"))),
            }
        }
        Ok(g)
    }

    fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", s.host));
        }
        if self.source {
            parts.push(format!("source {}", s.source.describe()));
        }
        if self.tags {
            let mut t = s.tags.clone();
            t.sort();
            parts.push(format!("tags {}", t.join(",")));
        }
        parts.join(", ")
    }
}

/// Keep rules saved in the repository config, so a scheduled prune needs
/// no flags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedPolicy {
    pub keep: Policy,
    pub group_by: String,
}

pub fn saved_policy(repo: &Repository) -> Result<Option<SavedPolicy>> {
    match &repo.config().retention {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::Invalid(format!("the saved retention policy cannot be read ({e}); set it again"))),
    }
}

/// Save (or with `None`, clear) the policy. The config is rewritten
/// atomically; nothing else changes.
pub fn save_policy(repo: &mut Repository, policy: Option<&SavedPolicy>) -> Result<()> {
    if let Some(p) = policy {
        GroupBy::parse(&p.group_by)?;
    }
    let mut config = repo.config().clone();
    config.retention = policy.map(|p| serde_json::to_value(p).expect("policy serialises"));
    repo.save_config(config)
}

/// Decide every snapshot of the repository by `policy`.
pub fn plan(repo: &Repository, policy: &Policy, group_by: GroupBy) -> Result<Vec<(Decision, Snapshot)>> {
    if policy.is_empty() {
        return Err(Error::Invalid(
            "no keep rule given (--keep-last, --keep-daily, …, or a saved policy): refusing to remove every snapshot"
                .into(),
        ));
    }
    let (snaps, _) = repo.list_snapshots()?;
    let candidates: Vec<Candidate> = snaps
        .iter()
        .map(|(id, s)| Candidate { id: *id, time: s.time, group: group_by.key(s), tags: s.tags.clone() })
        .collect();
    let by_id: std::collections::HashMap<Id, Snapshot> = snaps.into_iter().collect();
    Ok(apply(policy, &candidates)
        .into_iter()
        .map(|d| {
            let s = by_id[&d.id].clone();
            (d, s)
        })
        .collect())
}

/// Remove snapshot files.
pub fn remove(repo: &Repository, ids: &[Id]) -> Result<()> {
    if !ids.is_empty() {
        repo.require_full_access("forget snapshots")?;
    }
    for id in ids {
        repo.delete_snapshot(id)?;
    }
    Ok(())
}
