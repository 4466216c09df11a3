//! `snap prune`: give back the space of data that no snapshot uses.
//!
//! Two phases, so backups keep running while the slow part happens:
//!
//! 1. **Plan and repack** (under the caller's shared lock): load the index,
//!    mark every blob the snapshots reach (one bit per index entry), and
//!    sort packs into keep / repack (unused share above `max_unused`) /
//!    delete (nothing used). Copy the used blobs of repack packs, still
//!    sealed and checked, into new packs; make those packs and an index
//!    file listing them durable. Nothing is deleted in this phase.
//! 2. **Delete** (under an exclusive lock, taken briefly): every backup that
//!    ran alongside phase 1 has finished and its snapshot is visible. Walk
//!    only the snapshots that appeared since phase 1; a pack holding a blob
//!    they newly use (a backup deduplicated against data that was garbage
//!    when planned) is rescued. Then write index files without the
//!    condemned packs, delete the index files they replace, and delete the
//!    condemned packs and packs no index lists. If the exclusive lock
//!    cannot be had in time, phase 2 is left to the next prune; the
//!    repository stays valid with some data stored twice.
//!
//! Every intermediate state is a valid repository (see docs/FORMAT.md §13):
//! killed at any point, `check` passes and a re-run finishes the job.
//!
//! Memory: the index (52 bytes a blob), one bit per blob, a few words per
//! pack, and the repacked blobs of the packs in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crossbeam_channel::bounded;

use super::super::backend::FileKind;
use super::super::error::{Error, Result};
use super::super::failpoint;
use super::super::format::blob::{decode_blob, BlobType};
use super::super::format::index::IndexFile;
use super::super::format::pack::PackEntry;
use super::super::id::Id;
use super::super::index::MasterIndex;
use super::super::packer::PackBuilder;
use super::super::repository::{parse_name, Repository};
use super::check::pack_path;
use super::repair::IndexWriter;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this share (0..=1) of its blob bytes
    /// is unused.
    pub max_unused: f64,
    /// Plan and report only.
    pub dry_run: bool,
    pub threads: usize,
    /// Snapshots to treat as gone (a dry run's would-be-forgotten ones).
    pub ignore_snapshots: HashSet<Id>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub blobs: usize,
    pub blobs_used: usize,
    pub packs: usize,
    pub packs_kept: usize,
    pub packs_repack: usize,
    /// Packs with nothing used, deleted whole.
    pub packs_unused: usize,
    /// Packs on disk that no index lists (left by interrupted runs).
    pub packs_unindexed: usize,
    /// Condemned packs kept because a backup that ran alongside used them.
    pub packs_rescued: usize,
    pub packs_written: usize,
    pub packs_deleted: usize,
    pub bytes_before: u64,
    /// Bytes of packs that kept snapshots do not need (before pruning).
    pub bytes_unused: u64,
    /// Used bytes copied out of repacked packs.
    pub bytes_repacked: u64,
    pub bytes_written: u64,
    pub bytes_deleted: u64,
    pub bytes_after: u64,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Temporary files of interrupted writes, removed.
    pub temporaries_removed: u64,
    /// Why phase 2 did not run (the next prune will do it).
    pub deferred: Option<String>,
}

/// How phase 2 gets its exclusive lock; the returned guard is held until
/// the deletions are done.
pub type TakeExclusive<'a> = dyn FnMut() -> Result<Box<dyn std::any::Any>> + 'a;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

#[derive(Default, Clone)]
struct PackUse {
    /// Bytes of all blobs the index files list in the pack (copies included).
    blob_bytes: u64,
    used_bytes: u64,
    used_blobs: u32,
}

/// Which blobs snapshots reach: one bit per loaded index entry, plus a set
/// for blobs indexed after the load (phase 2 only, so it stays small).
struct Reachable {
    bits: Vec<u64>,
    recent: HashSet<Id>,
}

impl Reachable {
    fn new(n: usize) -> Reachable {
        Reachable { bits: vec![0; n.div_ceil(64)], recent: HashSet::new() }
    }

    fn is_set(&self, pos: usize) -> bool {
        self.bits[pos / 64] & (1 << (pos % 64)) != 0
    }

    fn set(&mut self, pos: usize) {
        self.bits[pos / 64] |= 1 << (pos % 64);
    }

    /// Mark `id`; true when it was not marked before.
    fn mark(&mut self, index: &MasterIndex, id: &Id) -> Result<bool> {
        match index.loaded_position(id) {
            Some(pos) => {
                let fresh = !self.is_set(pos);
                self.set(pos);
                Ok(fresh)
            }
            None if index.contains(id) => Ok(self.recent.insert(*id)),
            None => Err(Error::MissingBlob(*id)),
        }
    }

    /// Mark everything reachable from `root`; `fresh` sees each blob marked
    /// for the first time (trees before their contents).
    fn walk(&mut self, repo: &Repository, root: Id, fresh: &mut dyn FnMut(&Id)) -> Result<()> {
        let mut stack = vec![root];
        let mut newly = Vec::new();
        while let Some(tree_id) = stack.pop() {
            if !self.mark(&repo.index(), &tree_id)? {
                continue;
            }
            fresh(&tree_id);
            let tree = repo.read_tree(&tree_id)?;
            {
                let index = repo.index();
                for node in &tree.nodes {
                    for blob in &node.content {
                        if self.mark(&index, blob)? {
                            newly.push(*blob);
                        }
                    }
                    if let Some(sub) = node.subtree {
                        stack.push(sub);
                    }
                }
            }
            for blob in newly.drain(..) {
                fresh(&blob);
            }
        }
        Ok(())
    }
}

fn walk_snapshot(
    repo: &Repository,
    reach: &mut Reachable,
    id: &Id,
    root: Id,
    fresh: &mut dyn FnMut(&Id),
) -> Result<()> {
    reach.walk(repo, root, fresh).map_err(|e| match e {
        Error::MissingBlob(blob) => Error::Invalid(format!(
            "snapshot {} needs blob {}, which no index lists: nothing was pruned; run `snap check`, then \
             `snap repair index` and `snap repair snapshots`",
            id.short(),
            blob.short()
        )),
        other => Error::Invalid(format!("reading snapshot {}: {other}; nothing was pruned", id.short())),
    })
}

pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    take_exclusive: &mut TakeExclusive<'_>,
    note: &mut dyn FnMut(&str),
) -> Result<PruneReport> {
    if !opts.dry_run {
        repo.require_full_access("prune")?;
    }
    let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };

    // ---- Phase 1: plan. ----
    note("loading the index");
    let mut index = MasterIndex::new();
    let mut index_files: Vec<(Id, Vec<Id>)> = Vec::new();
    let mut blob_bytes: HashMap<Id, u64> = HashMap::new();
    // One index file in memory at a time. Files that supersede others are
    // never written by current versions; when found, the index is loaded
    // again without the superseded ones.
    let mut superseded: HashSet<Id> = HashSet::new();
    let names: Vec<Id> =
        repo.backend().list(FileKind::Index)?.iter().map(|f| parse_name(&f.name)).collect::<Result<_>>()?;
    let read = |id: &Id| {
        repo.read_index_file(&id.to_hex())
            .map_err(|e| Error::Invalid(format!("{e}: run `snap repair index` before pruning; nothing was pruned")))
    };
    let load = |index: &mut MasterIndex, blob_bytes: &mut HashMap<Id, u64>, file: &IndexFile| {
        index.load_file(file);
        for p in &file.packs {
            *blob_bytes.entry(p.id).or_default() += p.blobs.iter().map(|b| b.length as u64).sum::<u64>();
        }
    };
    for id in &names {
        let file = read(id)?;
        superseded.extend(file.supersedes.iter().copied());
        load(&mut index, &mut blob_bytes, &file);
        index_files.push((*id, file.packs.iter().map(|p| p.id).collect()));
    }
    if names.iter().any(|id| superseded.contains(id)) {
        index = MasterIndex::new();
        blob_bytes.clear();
        for id in names.iter().filter(|id| !superseded.contains(id)) {
            load(&mut index, &mut blob_bytes, &read(id)?);
        }
    }
    index.seal_loaded();
    repo.set_index(index);
    report.blobs = repo.index().loaded_len();
    let known_files: HashSet<Id> = index_files.iter().map(|(id, _)| *id).collect();

    let present: HashMap<Id, u64> =
        repo.backend().list(FileKind::Pack)?.into_iter().filter_map(|p| Some((p.name.parse().ok()?, p.size))).collect();
    report.packs = present.len();
    report.bytes_before = present.values().sum();

    note("finding the data snapshots use");
    let (mut snapshots, unreadable) = repo.list_snapshots()?;
    snapshots.retain(|(id, _)| !opts.ignore_snapshots.contains(id));
    if let Some((name, e)) = unreadable.first() {
        return Err(Error::Invalid(format!(
            "snapshots/{name} cannot be read ({e}); prune must know every snapshot's data: forget or repair it \
             first; nothing was pruned"
        )));
    }
    report.snapshots = snapshots.len();
    let seen_snapshots: HashSet<Id> = snapshots.iter().map(|(id, _)| *id).collect();
    let mut reach = Reachable::new(report.blobs);
    for (id, snap) in &snapshots {
        walk_snapshot(repo, &mut reach, id, snap.tree, &mut |_| {})?;
    }
    drop(snapshots);
    // Dictionaries stay whatever snapshots remain: a blob names its
    // dictionary only inside its sealed payload, and a blob deduplicated
    // into another stream (a renamed table) still needs the dictionary of
    // the stream that first stored it. One per large table, reused by
    // every later backup of it.
    for pos in repo.index().loaded_dictionaries() {
        reach.set(pos);
    }

    // Per-pack use, from the loaded entries (the copies lookups resolve to).
    let pack_count = repo.index().pack_count();
    // Pack ids by pack number, once, instead of a locked lookup per use.
    let pack_ids: Vec<Id> = {
        let index = repo.index();
        (0..pack_count).map(|n| index.pack_id(n as u32)).collect()
    };
    let mut usage = vec![PackUse::default(); pack_count];
    {
        let index = repo.index();
        for (n, u) in usage.iter_mut().enumerate() {
            u.blob_bytes = blob_bytes.get(&pack_ids[n]).copied().unwrap_or(0);
        }
        for pos in 0..index.loaded_len() {
            if reach.is_set(pos) {
                let (_, pack, length) = index.loaded_at(pos);
                let u = &mut usage[pack as usize];
                u.used_bytes += length as u64;
                u.used_blobs += 1;
                report.blobs_used += 1;
            }
        }
    }
    drop(blob_bytes);
    let mut fate = vec![Fate::Keep; pack_count];
    for (n, u) in usage.iter().enumerate() {
        let pack = pack_ids[n];
        let size = present.get(&pack).copied();
        if size.is_none() {
            if u.used_blobs > 0 {
                return Err(Error::Invalid(format!(
                    "{} is missing and holds data that snapshots use: nothing was pruned; run `snap repair index`, \
                     then `snap repair snapshots`",
                    pack_path(&pack.to_hex())
                )));
            }
            fate[n] = Fate::Delete;
            continue;
        }
        let size = size.unwrap_or(0);
        let unused = u.blob_bytes.saturating_sub(u.used_bytes);
        fate[n] = if u.used_blobs == 0 {
            report.bytes_unused += size;
            Fate::Delete
        } else if u.blob_bytes > 0 && unused as f64 / u.blob_bytes as f64 > opts.max_unused {
            report.bytes_unused += unused;
            Fate::Repack
        } else {
            report.bytes_unused += unused;
            Fate::Keep
        };
        match fate[n] {
            Fate::Keep => report.packs_kept += 1,
            Fate::Repack => {
                report.packs_repack += 1;
                report.bytes_repacked += u.used_bytes;
            }
            Fate::Delete => report.packs_unused += 1,
        }
    }
    let indexed: HashSet<Id> = pack_ids.iter().copied().collect();
    let unindexed: Vec<(Id, u64)> =
        present.iter().filter(|(id, _)| !indexed.contains(id)).map(|(i, s)| (*i, *s)).collect();
    report.packs_unindexed = unindexed.len();
    report.bytes_unused += unindexed.iter().map(|(_, s)| s).sum::<u64>();
    if opts.dry_run {
        let freed: u64 =
            (0..pack_count).filter(|n| fate[*n] != Fate::Keep).filter_map(|n| present.get(&pack_ids[n])).sum::<u64>()
                + unindexed.iter().map(|(_, s)| s).sum::<u64>();
        report.bytes_deleted = freed;
        report.bytes_written = report.bytes_repacked;
        report.bytes_after = report.bytes_before - freed + report.bytes_repacked;
        return Ok(report);
    }

    // ---- Phase 1: repack. ----
    failpoint::hit("prune-planned");
    let mut ours: HashSet<Id> = HashSet::new();
    let mut new_packs: HashSet<Id> = HashSet::new();
    if report.packs_repack > 0 {
        note(&format!("repacking {} pack(s)", report.packs_repack));
        let (files, packs) = repack(repo, &reach, &fate, opts.threads, &mut report)?;
        ours.extend(files);
        new_packs.extend(packs);
    }

    // ---- Phase 2: delete, under an exclusive lock. ----
    failpoint::hit("prune-repacked");
    let condemned_before: usize = fate.iter().filter(|f| **f != Fate::Keep).count();
    if condemned_before == 0 && unindexed.is_empty() {
        report.bytes_after = report.bytes_before + report.bytes_written;
        return Ok(report);
    }
    note("waiting for running backups to finish before deleting");
    let _exclusive = match take_exclusive() {
        Ok(guard) => guard,
        Err(e) => {
            report.deferred = Some(format!("{e}; the next prune deletes what this one planned"));
            report.bytes_after = report.bytes_before + report.bytes_written;
            return Ok(report);
        }
    };

    failpoint::hit("prune-exclusive");
    // No backup runs now, so every temporary file is a crashed one's.
    report.temporaries_removed = repo.backend().remove_staged_leftovers()?;

    // Index files and snapshots that appeared while phase 1 ran.
    let mut known_packs = indexed;
    known_packs.extend(new_packs.iter().copied());
    for f in repo.backend().list(FileKind::Index)? {
        let id = parse_name(&f.name)?;
        if known_files.contains(&id) || ours.contains(&id) {
            continue;
        }
        let file = repo.read_index_file(&f.name)?;
        let mut index = repo.index_mut();
        for p in &file.packs {
            index.add_pack(p.id, &p.blobs);
            known_packs.insert(p.id);
        }
    }
    let (snapshots, unreadable) = repo.list_snapshots()?;
    if let Some((name, e)) = unreadable.first() {
        return Err(Error::Invalid(format!(
            "snapshots/{name} appeared during the prune and cannot be read ({e}); nothing was deleted"
        )));
    }
    let mut rescued: HashSet<u32> = HashSet::new();
    for (id, snap) in snapshots.iter().filter(|(id, _)| !seen_snapshots.contains(id)) {
        let mut fresh = |blob: &Id| {
            if let Some(n) = repo.index().pack_number_of(blob) {
                if fate.get(n as usize).is_some_and(|f| *f != Fate::Keep) {
                    rescued.insert(n);
                }
            }
        };
        walk_snapshot(repo, &mut reach, id, snap.tree, &mut fresh)?;
    }
    for n in &rescued {
        fate[*n as usize] = Fate::Keep;
    }
    report.packs_rescued = rescued.len();
    let condemned: HashSet<Id> = (0..pack_count).filter(|n| fate[*n] != Fate::Keep).map(|n| pack_ids[n]).collect();

    // New index files without the condemned packs, then drop the old ones.
    note("writing the new index");
    let mut writer = IndexWriter::default();
    let mut replaced = Vec::new();
    for (file_id, packs) in &index_files {
        if !superseded.contains(file_id) && !packs.iter().any(|p| condemned.contains(p)) {
            continue;
        }
        replaced.push(*file_id);
        if superseded.contains(file_id) {
            continue;
        }
        let file = repo.read_index_file(&file_id.to_hex())?;
        for pack in file.packs.into_iter().filter(|p| !condemned.contains(&p.id)) {
            writer.push(repo, pack)?;
        }
    }
    let (written, _) = writer.finish(repo)?;
    report.index_files_written += written.len();
    failpoint::hit("prune-index-written");
    for file_id in &replaced {
        repo.backend().delete(FileKind::Index, &file_id.to_hex())?;
        report.index_files_removed += 1;
        failpoint::hit("prune-index-removed");
    }

    // Packs last: by now no index file lists them.
    note("deleting unused packs");
    let now_present = repo.backend().list(FileKind::Pack)?;
    for p in now_present {
        let Ok(id) = p.name.parse::<Id>() else { continue };
        if condemned.contains(&id) || !known_packs.contains(&id) {
            repo.backend().delete(FileKind::Pack, &p.name)?;
            report.packs_deleted += 1;
            report.bytes_deleted += p.size;
            failpoint::hit("prune-pack-deleted");
        }
    }
    report.bytes_after = repo.backend().list(FileKind::Pack)?.iter().map(|p| p.size).sum();
    Ok(report)
}

/// Copy the used blobs of every `Repack` pack into new packs; returns the
/// index files and packs written. Each blob is opened and checked before it
/// is copied, so damage is never spread; on any error nothing is deleted.
fn repack(
    repo: &Repository,
    reach: &Reachable,
    fate: &[Fate],
    threads: usize,
    report: &mut PruneReport,
) -> Result<(Vec<Id>, Vec<Id>)> {
    // Used blobs per pack to repack, in pack order.
    let mut wanted: HashMap<u32, Vec<Id>> = HashMap::new();
    {
        let index = repo.index();
        for pos in 0..index.loaded_len() {
            if reach.is_set(pos) {
                let (id, pack, _) = index.loaded_at(pos);
                if fate[pack as usize] == Fate::Repack {
                    wanted.entry(pack).or_default().push(id);
                }
            }
        }
    }
    let mut jobs: Vec<(u32, Vec<Id>)> = wanted.into_iter().collect();
    jobs.sort_by_key(|(n, _)| *n);
    let queue = Mutex::new(jobs.into_iter());
    let pack_size = repo.config().pack_size as usize;
    let (tx, rx) = bounded::<Result<Copied>>(1);
    let mut builders = [PackBuilder::new(), PackBuilder::new()];
    let mut index_writer = IndexWriter::default();
    let mut new_packs = Vec::new();
    let mut first_error = None;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let queue = &queue;
            s.spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some((pack, blobs)) = next else { return };
                if tx.send(copy_blobs(repo, pack, &blobs)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for copied in rx.iter() {
            if first_error.is_some() {
                continue;
            }
            let step = (|| -> Result<()> {
                let copied = copied?;
                let mut at = 0usize;
                for entry in copied.entries {
                    let stored = &copied.stored[at..at + entry.length as usize];
                    at += entry.length as usize;
                    let b = &mut builders[entry.blob_type.pack_slot()];
                    b.push(repo, entry, stored, pack_size)?;
                    if b.len() >= pack_size {
                        let full = std::mem::take(b);
                        write_pack(repo, full, &mut index_writer, &mut new_packs, report)?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = step {
                first_error = Some(e);
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    for b in builders {
        if !b.is_empty() {
            write_pack(repo, b, &mut index_writer, &mut new_packs, report)?;
        }
    }
    let (files, bytes) = index_writer.finish(repo)?;
    report.index_files_written += files.len();
    report.bytes_written += bytes;
    Ok((files, new_packs))
}

fn write_pack(
    repo: &Repository,
    builder: PackBuilder,
    index_writer: &mut IndexWriter,
    new_packs: &mut Vec<Id>,
    report: &mut PruneReport,
) -> Result<()> {
    let (written, len) = builder.write(repo)?;
    failpoint::hit("prune-pack-written");
    report.packs_written += 1;
    report.bytes_written += len;
    // Not added to the in-memory index: lookups keep resolving to the
    // original copies, which stay until phase 2, and the index stays small.
    new_packs.push(written.id);
    index_writer.push(repo, written)
}

/// Read one pack and return the listed blobs, still sealed and back to
/// back in one buffer, after checking that each opens and hashes to its id.
fn copy_blobs(repo: &Repository, pack: u32, blobs: &[Id]) -> Result<Copied> {
    let name = repo.index().pack_id(pack).to_hex();
    let mut located = Vec::with_capacity(blobs.len());
    for id in blobs {
        located.push((*id, repo.index().get(id).ok_or(Error::MissingBlob(*id))?));
    }
    located.sort_by_key(|(_, loc)| loc.offset);
    let mut entries = Vec::with_capacity(located.len());
    let mut stored_all = Vec::new();
    // Only the used bytes are read: runs of blobs with small gaps between
    // them go in one ranged read.
    let mut i = 0;
    while i < located.len() {
        let start = located[i].1.offset as u64;
        let mut j = i + 1;
        while j < located.len()
            && (located[j].1.offset as u64)
                < located[j - 1].1.offset as u64 + located[j - 1].1.length as u64 + 64 * 1024
            && (located[j].1.offset as u64 + located[j].1.length as u64) - start < 8 << 20
        {
            j += 1;
        }
        let end = located[j - 1].1.offset as u64 + located[j - 1].1.length as u64;
        let run = repo.backend().read_range(FileKind::Pack, &name, start, end - start)?;
        for (id, loc) in &located[i..j] {
            let from = (loc.offset as u64 - start) as usize;
            let stored = run
                .get(from..from + loc.length as usize)
                .ok_or_else(|| Error::Invalid(format!("{} is shorter than its index says", pack_path(&name))))?;
            decode_blob(repo.key(), loc.blob_type, loc.compression, id, loc.raw_length, stored, repo).map_err(|e| {
                Error::Invalid(format!(
                    "{} blob {} in {} is damaged ({e}): nothing was deleted; run `snap check --read-data` and \
                     `snap repair snapshots`",
                    if loc.blob_type == BlobType::Tree { "tree" } else { "data" },
                    id.short(),
                    pack_path(&name)
                ))
            })?;
            entries.push(PackEntry {
                blob_type: loc.blob_type,
                compression: loc.compression,
                id: *id,
                length: loc.length,
                raw_length: loc.raw_length,
            });
            stored_all.extend_from_slice(stored);
        }
        i = j;
    }
    Ok(Copied { entries, stored: stored_all })
}

/// Blobs copied out of one pack: entries, and their sealed bytes in order.
struct Copied {
    entries: Vec<PackEntry>,
    stored: Vec<u8>,
}
