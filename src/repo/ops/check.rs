//! `snap check`: structure, and optionally every byte.
//!
//! Structure: every index file opens; every indexed pack exists and its
//! header agrees with the index; every snapshot opens and every tree and
//! data blob it references is indexed with the right type. With
//! `read_data`, selected packs are read whole: name = hash of bytes, header
//! parses, and every blob opens and hashes to its id.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::seq::SliceRandom;

use super::super::backend::FileKind;
use super::super::error::{Error, Result};
use super::super::format::blob::{decode_blob, BlobType};
use super::super::format::index::{IndexBlob, IndexFile};
use super::super::format::pack::{read_header, LocatedEntry};
use super::super::id::Id;
use super::super::reader::read_threads;
use super::super::repository::{parse_name, Repository};
use super::super::saver::WorkProgress;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A fraction of packs (0..=1), chosen at random each run.
    Subset(f64),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    /// Repository file or snapshot object concerned.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub index_files: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_read: usize,
    pub snapshots: usize,
    pub trees: usize,
}

impl CheckReport {
    fn problem(&mut self, object: impl Into<String>, message: impl std::fmt::Display) {
        self.problems.push(Problem { object: object.into(), message: message.to_string() });
    }
    fn warn(&mut self, object: impl Into<String>, message: impl std::fmt::Display) {
        self.warnings.push(Problem { object: object.into(), message: message.to_string() });
    }
}

pub fn pack_path(id: &str) -> String {
    format!("data/{}/{}", &id[..2.min(id.len())], id)
}

/// Read and parse a pack's header with one ranged read of its tail.
pub fn read_pack_header(repo: &Repository, name: &str, size: u64) -> Result<Vec<LocatedEntry>> {
    let tail_len = size.min(256 * 1024);
    let tail = repo.backend().read_range(FileKind::Pack, name, size - tail_len, tail_len)?;
    match read_header(repo.key(), &tail, size) {
        Ok(e) => Ok(e),
        Err(_) if tail_len < size => {
            // Header larger than our guess: read the whole pack.
            let all = repo.backend().read(FileKind::Pack, name)?;
            read_header(repo.key(), &all, size).map_err(|e| Error::format(pack_path(name), e))
        }
        Err(e) => Err(Error::format(pack_path(name), e)),
    }
}

pub fn check(repo: &Repository, read_data: ReadData, progress: &WorkProgress) -> Result<CheckReport> {
    let mut report = CheckReport::default();

    // Index files.
    let mut indexed: HashMap<Id, Vec<IndexBlob>> = HashMap::new();
    let index_names = repo.backend().list(FileKind::Index)?;
    report.index_files = index_names.len();
    let mut opened = Vec::new();
    for f in &index_names {
        let object = format!("index/{}", f.name);
        let id = match parse_name(&f.name) {
            Ok(id) => id,
            Err(e) => {
                report.problem(object, e);
                continue;
            }
        };
        let bytes = match repo.backend().read(FileKind::Index, &f.name) {
            Ok(b) => b,
            Err(e) => {
                report.problem(object, e);
                continue;
            }
        };
        if Id::of_bytes(&bytes) != id {
            report.problem(object.clone(), "contents do not match the file name");
        }
        match IndexFile::open(repo.key(), &bytes) {
            Ok(file) => {
                for p in &file.packs {
                    indexed.entry(p.id).or_default().extend(p.blobs.iter().cloned());
                }
                opened.push((id, file));
            }
            Err(e) => report.problem(object, format!("{e} (run `snap repair index`)")),
        }
    }
    repo.install_index(&opened);
    drop(opened);

    // Packs against the index.
    let packs = repo.backend().list(FileKind::Pack)?;
    report.packs = packs.len();
    let present: HashMap<Id, u64> = packs.iter().filter_map(|p| p.name.parse().ok().map(|id| (id, p.size))).collect();
    for p in &packs {
        if p.name.parse::<Id>().is_err() {
            report.warn(pack_path(&p.name), "unexpected file name");
        }
    }
    for (pack, blobs) in &indexed {
        let name = pack.to_hex();
        let Some(size) = present.get(pack) else {
            report.problem(pack_path(&name), format!("missing, but the index lists {} blobs in it", blobs.len()));
            continue;
        };
        match read_pack_header(repo, &name, *size) {
            Ok(entries) => {
                let in_header: HashSet<(Id, u32, u32, u8)> =
                    entries.iter().map(|e| (e.entry.id, e.offset, e.entry.length, e.entry.blob_type as u8)).collect();
                let mismatched = blobs
                    .iter()
                    .filter(|b| !in_header.contains(&(b.id, b.offset, b.length, b.blob_type as u8)))
                    .count();
                if mismatched > 0 {
                    report
                        .problem(pack_path(&name), format!("{mismatched} index entries disagree with the pack header"));
                }
            }
            Err(e) => report.problem(pack_path(&name), e),
        }
    }
    let unindexed: Vec<&Id> = present.keys().filter(|id| !indexed.contains_key(id)).collect();
    for id in unindexed {
        report.warn(
            pack_path(&id.to_hex()),
            "not in any index (left by an interrupted run; `snap prune` removes it, `snap repair index` adopts it)",
        );
    }

    // Snapshots and trees.
    let (snapshots, bad) = repo.list_snapshots()?;
    report.snapshots = snapshots.len() + bad.len();
    for (name, e) in bad {
        report.problem(format!("snapshots/{name}"), e);
    }
    let mut seen_trees: HashSet<Id> = HashSet::new();
    let mut seen_data: HashSet<Id> = HashSet::new();
    for (sid, snap) in &snapshots {
        let mut stack: Vec<(Id, String)> = vec![(snap.tree, String::new())];
        while let Some((tree_id, path)) = stack.pop() {
            if !seen_trees.insert(tree_id) {
                continue;
            }
            report.trees += 1;
            let where_ = format!("snapshot {} {}", sid.short(), if path.is_empty() { "/" } else { &path });
            let tree = match repo.read_tree(&tree_id) {
                Ok(t) => t,
                Err(e) => {
                    report.problem(where_, format!("tree {}: {e}", tree_id.short()));
                    continue;
                }
            };
            for node in tree.nodes {
                let child = format!("{path}/{}", node.name);
                if let Some(sub) = node.subtree {
                    stack.push((sub, child.clone()));
                }
                for blob in &node.content {
                    if !seen_data.insert(*blob) {
                        continue;
                    }
                    match repo.index().get(blob) {
                        None => report.problem(
                            format!("snapshot {} {child}", sid.short()),
                            format!("data blob {} is missing", blob.short()),
                        ),
                        Some(loc) if loc.blob_type != BlobType::Data => report.problem(
                            format!("snapshot {} {child}", sid.short()),
                            format!("blob {} is not a data blob", blob.short()),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    // Data.
    let selected: Vec<(Id, u64)> = match read_data {
        ReadData::None => Vec::new(),
        ReadData::All => present.iter().map(|(k, v)| (*k, *v)).collect(),
        ReadData::Subset(frac) => {
            let mut all: Vec<(Id, u64)> = present.iter().map(|(k, v)| (*k, *v)).collect();
            all.sort();
            all.shuffle(&mut rand::thread_rng());
            let n = ((all.len() as f64) * frac).ceil() as usize;
            all.truncate(n.min(all.len()));
            all
        }
    };
    progress.set_total(selected.len() as u64, selected.iter().map(|(_, size)| size).sum());
    let results = read_packs(repo, &selected, progress);
    for (id, res) in results {
        report.packs_read += 1;
        match res {
            Ok(n) => report.blobs_read += n,
            Err(damage) => {
                for m in damage.messages {
                    report.problem(pack_path(&id.to_hex()), m);
                }
            }
        }
    }
    report.problems.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(report)
}

/// What reading a pack found wrong.
#[derive(Debug, Default)]
pub struct PackDamage {
    pub messages: Vec<String>,
    /// Blobs that fail to open or hash to their id.
    pub blobs: Vec<Id>,
    /// The pack could not be read or its header not parsed: none of its
    /// blobs can be trusted.
    pub unreadable: bool,
}

type PackResult = (Id, std::result::Result<usize, PackDamage>);

pub fn read_packs(repo: &Repository, packs: &[(Id, u64)], progress: &WorkProgress) -> Vec<PackResult> {
    let queue = std::sync::Mutex::new(packs.iter());
    let out = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..read_threads(repo) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next().copied();
                let Some((id, size)) = next else { return };
                let res = verify_pack(repo, &id);
                progress.add_bytes(size);
                progress.item_done();
                out.lock().unwrap_or_else(|p| p.into_inner()).insert(id, res);
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().collect()
}

/// Read a whole pack: its name must be the hash of its bytes, and every
/// blob must open and hash to its id.
pub fn verify_pack(repo: &Repository, id: &Id) -> std::result::Result<usize, PackDamage> {
    let name = id.to_hex();
    let unreadable = |msg: String| PackDamage { messages: vec![msg], blobs: Vec::new(), unreadable: true };
    let bytes = repo.backend().read(FileKind::Pack, &name).map_err(|e| unreadable(e.to_string()))?;
    let mut damage = PackDamage::default();
    if Id::of_bytes(&bytes) != *id {
        damage.messages.push("contents do not match the pack's name (damaged)".to_string());
    }
    let entries = match read_header(repo.key(), &bytes, bytes.len() as u64) {
        Ok(e) => e,
        Err(e) => {
            damage.messages.push(format!("header: {e}"));
            damage.unreadable = true;
            return Err(damage);
        }
    };
    for e in &entries {
        let start = e.offset as usize;
        let stored = &bytes[start..start + e.entry.length as usize];
        if let Err(err) = decode_blob(
            repo.key(),
            e.entry.blob_type,
            e.entry.compression,
            &e.entry.id,
            e.entry.raw_length,
            stored,
            repo,
        ) {
            damage.messages.push(format!("{} blob {}: {err}", e.entry.blob_type.name(), e.entry.id.short()));
            damage.blobs.push(e.entry.id);
        }
    }
    if damage.messages.is_empty() {
        Ok(entries.len())
    } else {
        Err(damage)
    }
}
