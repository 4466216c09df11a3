//! Retention policies: which snapshots a policy keeps, and why.
//!
//! Snapshots are grouped (by default by source and host); within a group,
//! newest first:
//! - `last N` keeps the N newest;
//! - `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each
//!   of the N most recent calendar buckets (local time zone; ISO weeks) that
//!   hold a snapshot;
//! - `within D` keeps every snapshot taken within D of the group's newest;
//! - `tag T` keeps every snapshot tagged T.
//!
//! The newest snapshot of a group is always kept: a policy never empties a
//! group (only naming a snapshot removes it). A policy with no rule is
//! refused, so that a mistyped command cannot wipe a repository.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Local, Timelike, Utc};

use super::id::Id;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
    /// Seconds.
    #[serde(default)]
    pub within_s: u64,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_s == 0
            && self.tags.is_empty()
    }
}

/// Parse a duration like `90d`, `12h`, `2w`, `1y6m`, `30m` (minutes are
/// `min`; a bare `m` is months, as in restic's `--keep-within`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let c = rest.chars().next().expect("non-empty");
        if c.is_ascii_digit() {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, len) = if rest.starts_with("min") {
            (60, 3)
        } else {
            let u = match c {
                's' => 1,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                'm' => 30 * 86_400,
                'y' => 365 * 86_400,
                _ => return Err(format!("unknown unit {c:?} in duration {s:?} (use s, min, h, d, w, m, y)")),
            };
            (u, 1)
        };
        let n: u64 = num.parse().map_err(|_| format!("a number must come before each unit in {s:?}"))?;
        total += n * unit;
        num.clear();
        rest = &rest[len..];
    }
    if !num.is_empty() {
        return Err(format!("duration {s:?} lacks a unit after {num}"));
    }
    Ok(total)
}

/// What retention needs to know about one snapshot.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Id,
    pub time: DateTime<Utc>,
    pub group: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: Id,
    pub group: String,
    /// The rules that keep it; empty means it is removed.
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The calendar bucket of a time for each periodic rule, in local time.
fn bucket(kind: &str, t: &DateTime<Utc>) -> (i32, u32, u32, u32) {
    let l = t.with_timezone(&Local);
    match kind {
        "hourly" => (l.year(), l.ordinal(), l.hour(), 0),
        "daily" => (l.year(), l.ordinal(), 0, 0),
        "weekly" => {
            let w = l.iso_week();
            (w.year(), w.week(), 0, 0)
        }
        "monthly" => (l.year(), l.month(), 0, 0),
        _ => (l.year(), 0, 0, 0),
    }
}

/// Decide every snapshot. Order of the result: by group, newest first.
pub fn apply(policy: &Policy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.group.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, mut list) in groups {
        // Newest first; ties broken by id so the result is deterministic.
        list.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); list.len()];
        for (i, r) in reasons.iter_mut().enumerate().take(policy.last as usize) {
            let _ = i;
            r.push("last".into());
        }
        for (kind, n) in [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ] {
            let mut seen = 0u32;
            let mut last_bucket = None;
            for (i, s) in list.iter().enumerate() {
                if seen >= n {
                    break;
                }
                let b = bucket(kind, &s.time);
                if last_bucket != Some(b) {
                    reasons[i].push(kind.to_string());
                    last_bucket = Some(b);
                    seen += 1;
                }
            }
        }
        if policy.within_s > 0 {
            let newest = list[0].time;
            for (i, s) in list.iter().enumerate() {
                if (newest - s.time).num_seconds() <= policy.within_s as i64 {
                    reasons[i].push("within".into());
                }
            }
        }
        for (i, s) in list.iter().enumerate() {
            for t in &policy.tags {
                if s.tags.contains(t) {
                    reasons[i].push(format!("tag {t}"));
                }
            }
        }
        if reasons[0].is_empty() {
            reasons[0].push("newest of its group".into());
        }
        for (s, r) in list.into_iter().zip(reasons) {
            out.push(Decision { id: s.id, group: group.to_string(), reasons: r });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn cand(i: u8, secs: i64, group: &str, tags: &[&str]) -> Candidate {
        Candidate {
            id: Id([i; 32]),
            time: Utc.timestamp_opt(secs, 0).unwrap(),
            group: group.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_duration("1y6m").unwrap(), 365 * 86_400 + 180 * 86_400);
        assert_eq!(parse_duration("30min").unwrap(), 1800);
        assert!(parse_duration("5").is_err() && parse_duration("3x").is_err() && parse_duration("").is_err());
    }

    #[test]
    fn newest_is_kept_and_rules_are_named() {
        let snaps = vec![cand(1, 1000, "g", &[]), cand(2, 2000, "g", &["keep"]), cand(3, 3000, "g", &[])];
        let p = Policy { tags: vec!["nope".into()], ..Default::default() };
        let d = apply(&p, &snaps);
        assert_eq!(d.iter().filter(|d| d.keep()).count(), 1);
        assert_eq!(d[0].reasons, vec!["newest of its group"]);
        let p = Policy { tags: vec!["keep".into()], last: 1, ..Default::default() };
        let kept: Vec<u8> = apply(&p, &snaps).iter().filter(|d| d.keep()).map(|d| d.id.0[0]).collect();
        assert_eq!(kept, vec![3, 2]);
    }

    /// An independent reference: for each periodic rule, walk the distinct
    /// buckets from newest to oldest and take each bucket's newest member.
    fn reference(policy: &Policy, snaps: &[Candidate]) -> std::collections::BTreeSet<Id> {
        let mut keep = std::collections::BTreeSet::new();
        let mut by_group: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for s in snaps {
            by_group.entry(s.group.clone()).or_default().push(s.clone());
        }
        for (_, mut g) in by_group {
            g.sort_by_key(|s| (std::cmp::Reverse(s.time), std::cmp::Reverse(s.id)));
            keep.insert(g[0].id);
            g.iter().take(policy.last as usize).for_each(|s| {
                keep.insert(s.id);
            });
            // Buckets named by chrono's own formatting, not by `bucket`.
            for (fmt, n) in [
                ("%Y-%m-%d %H", policy.hourly),
                ("%Y-%m-%d", policy.daily),
                ("%G-W%V", policy.weekly),
                ("%Y-%m", policy.monthly),
                ("%Y", policy.yearly),
            ] {
                let name = |s: &Candidate| s.time.with_timezone(&Local).format(fmt).to_string();
                let mut names: Vec<String> = g.iter().map(name).collect();
                names.dedup();
                for b in names.into_iter().take(n as usize) {
                    let newest = g.iter().find(|s| name(s) == b).expect("bucket member");
                    keep.insert(newest.id);
                }
            }
            if policy.within_s > 0 {
                for s in &g {
                    if g[0].time.timestamp() - s.time.timestamp() <= policy.within_s as i64 {
                        keep.insert(s.id);
                    }
                }
            }
            for s in &g {
                if policy.tags.iter().any(|t| s.tags.contains(t)) {
                    keep.insert(s.id);
                }
            }
        }
        keep
    }

    proptest! {
        #[test]
        fn matches_the_reference(
            times in proptest::collection::vec((0i64..4 * 365 * 86_400, 0u8..3, any::<bool>()), 1..60),
            last in 0u32..4, hourly in 0u32..5, daily in 0u32..8, weekly in 0u32..6, monthly in 0u32..14, yearly in 0u32..3,
            within_h in 0u64..200,
        ) {
            // Times around month and year ends, with ties (same second).
            let base = 1_700_000_000i64;
            let snaps: Vec<Candidate> = times
                .iter()
                .enumerate()
                .map(|(i, (t, g, tagged))| cand(i as u8, base + (t / 3600) * 3600 + (t % 7), &format!("g{g}"), if *tagged { &["t"] } else { &[] }))
                .collect();
            let policy = Policy { last, hourly, daily, weekly, monthly, yearly, within_s: within_h * 3600, tags: vec!["t".into()] };
            let kept: std::collections::BTreeSet<Id> = apply(&policy, &snaps).into_iter().filter(|d| d.keep()).map(|d| d.id).collect();
            prop_assert_eq!(kept, reference(&policy, &snaps));
        }
    }
}
