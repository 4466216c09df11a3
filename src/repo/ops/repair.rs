//! `snap repair index`: rebuild the index from the pack headers.
//!
//! Order keeps the repository valid at every step: new index files are
//! written and durable before any old one is deleted, so a crash leaves
//! duplicates (harmless) and never a pack without an index entry.

use super::super::backend::FileKind;
use super::super::error::Result;
use super::super::format::index::{IndexBlob, IndexFile, IndexPack};
use super::super::id::Id;
use super::super::repository::Repository;
use super::check::{pack_path, read_pack_header};

use super::super::saver::BLOBS_PER_INDEX_FILE as BLOBS_PER_FILE;

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    pub packs: usize,
    pub blobs: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Packs whose header could not be read; their blobs are not indexed.
    pub unreadable_packs: Vec<String>,
}

/// Writes index entries out as files of at most `BLOBS_PER_FILE` blobs.
#[derive(Default)]
pub struct IndexWriter {
    current: IndexFile,
    pub written: Vec<Id>,
    pub bytes: u64,
}

impl IndexWriter {
    pub fn push(&mut self, repo: &Repository, pack: IndexPack) -> Result<()> {
        self.current.packs.push(pack);
        if self.current.blob_count() >= BLOBS_PER_FILE {
            self.flush(repo)?;
        }
        Ok(())
    }

    pub fn finish(mut self, repo: &Repository) -> Result<(Vec<Id>, u64)> {
        self.flush(repo)?;
        Ok((self.written, self.bytes))
    }

    fn flush(&mut self, repo: &Repository) -> Result<()> {
        if !self.current.packs.is_empty() {
            let (id, len) = repo.write_index_file(&std::mem::take(&mut self.current))?;
            self.written.push(id);
            self.bytes += len;
        }
        Ok(())
    }
}

pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    repo.require_full_access("rewrite the index")?;
    let mut report = RepairIndexReport::default();
    let old: Vec<String> = repo.backend().list(FileKind::Index)?.into_iter().map(|f| f.name).collect();
    let mut writer = IndexWriter::default();
    for p in repo.backend().list(FileKind::Pack)? {
        let Ok(id) = p.name.parse::<Id>() else {
            continue;
        };
        match read_pack_header(repo, &p.name, p.size) {
            Ok(entries) => {
                report.packs += 1;
                report.blobs += entries.len();
                let blobs = entries
                    .iter()
                    .map(|e| IndexBlob {
                        blob_type: e.entry.blob_type,
                        compression: e.entry.compression,
                        id: e.entry.id,
                        offset: e.offset,
                        length: e.entry.length,
                        raw_length: e.entry.raw_length,
                    })
                    .collect();
                writer.push(repo, IndexPack { id, blobs })?;
            }
            Err(e) => report.unreadable_packs.push(format!("{}: {e}", pack_path(&p.name))),
        }
    }
    let (written, _) = writer.finish(repo)?;
    report.index_files_written = written.len();
    let keep: std::collections::HashSet<String> = written.iter().map(|i| i.to_hex()).collect();
    for name in old {
        if !keep.contains(&name) {
            repo.backend().delete(FileKind::Index, &name)?;
            report.index_files_removed += 1;
        }
    }
    Ok(report)
}

/// A snapshot that references data the repository no longer has.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedSnapshot {
    pub id: Id,
    pub time: chrono::DateTime<chrono::Utc>,
    pub source: String,
    /// Paths dropped (directories end in `/`).
    pub lost: Vec<String>,
    /// The rewritten snapshot, once written.
    pub replaced_by: Option<Id>,
    /// Nothing of it could be kept (its root tree is lost).
    pub unrecoverable: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairSnapshotsReport {
    pub snapshots: usize,
    pub missing_packs: usize,
    pub packs_read: usize,
    pub bad_blobs: usize,
    pub damaged: Vec<DamagedSnapshot>,
    pub rewritten: bool,
}

/// Outcome of rewriting one tree without the lost blobs.
#[derive(Clone)]
enum Rewrite {
    Same,
    /// The tree itself is missing or damaged.
    Lost,
    Changed(Id, Vec<String>),
}

/// Find snapshots that need blobs which are missing (their pack is gone or
/// no index lists them) or damaged (with `read_data`, every pack is read),
/// and with `rewrite`, replace each by a snapshot without the affected
/// files and directories, recording them in `lost` and the old id in
/// `original`. New trees are durable before a new snapshot is written, and
/// the new snapshot before the old one is removed.
pub fn repair_snapshots(
    repo: &std::sync::Arc<Repository>,
    read_data: bool,
    rewrite: bool,
    progress: &crate::repo::saver::WorkProgress,
) -> Result<RepairSnapshotsReport> {
    use std::collections::{HashMap, HashSet};
    if rewrite {
        repo.require_full_access("rewrite snapshots")?;
    }
    let mut report = RepairSnapshotsReport { rewritten: rewrite, ..Default::default() };
    if let Some((name, e)) = repo.load_index_tolerant()?.into_iter().next() {
        return Err(crate::repo::Error::Invalid(format!(
            "index/{name} cannot be read ({e}): run `snap repair index` first"
        )));
    }
    let present: HashMap<Id, u64> =
        repo.backend().list(FileKind::Pack)?.into_iter().filter_map(|p| Some((p.name.parse().ok()?, p.size))).collect();
    let mut bad: HashSet<Id> = HashSet::new();
    let mut missing_packs = HashSet::new();
    for (id, loc) in repo.index().iter() {
        if !present.contains_key(&loc.pack) {
            bad.insert(id);
            missing_packs.insert(loc.pack);
        }
    }
    report.missing_packs = missing_packs.len();
    if read_data {
        let packs: Vec<(Id, u64)> = present.iter().map(|(k, v)| (*k, *v)).collect();
        progress.set_total(packs.len() as u64, packs.iter().map(|(_, s)| s).sum());
        for (pack, result) in super::check::read_packs(repo, &packs, progress) {
            report.packs_read += 1;
            if let Err(damage) = result {
                if damage.unreadable {
                    bad.extend(repo.index().iter().filter(|(_, l)| l.pack == pack).map(|(id, _)| id));
                }
                bad.extend(damage.blobs);
            }
        }
    }
    report.bad_blobs = bad.len();

    let saver = rewrite.then(|| {
        crate::repo::saver::BlobSaver::new(
            repo.clone(),
            std::sync::Arc::new(crate::repo::saver::Progress::default()),
            crate::repo::reader::default_threads(),
        )
    });
    let (snapshots, _) = repo.list_snapshots()?;
    report.snapshots = snapshots.len();
    let mut memo: HashMap<Id, Rewrite> = HashMap::new();
    let mut plans = Vec::new();
    for (id, snap) in snapshots {
        let outcome = rewrite_tree(repo, saver.as_ref(), &snap.tree, &bad, &mut memo)?;
        let (lost, new_root, unrecoverable) = match outcome {
            Rewrite::Same => continue,
            Rewrite::Lost => (vec!["/".to_string()], None, true),
            Rewrite::Changed(root, lost) => (lost.iter().map(|p| format!("/{p}")).collect(), Some(root), false),
        };
        plans.push((id, snap, new_root));
        let (_, snap, _) = plans.last().expect("just pushed");
        report.damaged.push(DamagedSnapshot {
            id,
            time: snap.time,
            source: snap.source.describe(),
            lost,
            replaced_by: None,
            unrecoverable,
        });
    }
    let Some(saver) = saver else { return Ok(report) };
    saver.finish()?;
    for ((old_id, snap, new_root), damaged) in plans.into_iter().zip(report.damaged.iter_mut()) {
        if let Some(root) = new_root {
            let mut fixed = snap.clone();
            fixed.tree = root;
            fixed.lost.extend(damaged.lost.iter().cloned());
            fixed.original = Some(old_id);
            damaged.replaced_by = Some(repo.write_snapshot(&fixed)?);
        }
        repo.delete_snapshot(&old_id)?;
    }
    Ok(report)
}

fn rewrite_tree(
    repo: &Repository,
    saver: Option<&crate::repo::saver::BlobSaver>,
    tree_id: &Id,
    bad: &std::collections::HashSet<Id>,
    memo: &mut std::collections::HashMap<Id, Rewrite>,
) -> Result<Rewrite> {
    use crate::repo::format::tree::Tree;
    if let Some(done) = memo.get(tree_id) {
        return Ok(done.clone());
    }
    let tree = match (bad.contains(tree_id), repo.read_tree(tree_id)) {
        (false, Ok(t)) => t,
        (_, Err(e)) if !e.is_integrity() => return Err(e),
        _ => {
            memo.insert(*tree_id, Rewrite::Lost);
            return Ok(Rewrite::Lost);
        }
    };
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    let mut lost = Vec::new();
    for mut node in tree.nodes {
        if node.content.iter().any(|b| bad.contains(b) || !repo.index().contains(b)) {
            lost.push(node.name.clone());
            continue;
        }
        if let Some(sub) = node.subtree {
            match rewrite_tree(repo, saver, &sub, bad, memo)? {
                Rewrite::Same => {}
                Rewrite::Lost => {
                    lost.push(format!("{}/", node.name));
                    continue;
                }
                Rewrite::Changed(new, sub_lost) => {
                    node.subtree = Some(new);
                    lost.extend(sub_lost.into_iter().map(|p| format!("{}/{p}", node.name)));
                }
            }
        }
        nodes.push(node);
    }
    let outcome = if lost.is_empty() {
        Rewrite::Same
    } else {
        let bytes = Tree { nodes }.encode();
        let new_id = match saver {
            Some(s) => s.save_tree(bytes)?,
            None => repo.key().blob_id(&bytes),
        };
        Rewrite::Changed(new_id, lost)
    };
    memo.insert(*tree_id, outcome.clone());
    Ok(outcome)
}
