//! Copying snapshots into another repository: the off-site half of 3-2-1,
//! without reading the backed-up source again.
//!
//! The two repositories have their own keys, and usually their own chunker
//! secrets, so blobs cannot be moved as they are: each file is read from the
//! source and chunked, deduplicated, compressed and sealed by the
//! destination, exactly as if the destination had backed it up. Identical
//! streams then cut into identical chunks there too, so a copy deduplicates
//! against the destination's own backups and earlier copies.
//!
//! Re-reading every file of every snapshot would make a daily copy as slow
//! as a first one. Instead, the newest earlier copy of each source is walked
//! side by side with its original: a file whose chunk list is unchanged
//! since then reuses the destination's chunk list without reading anything.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::super::archiver::{display_path, ContentSaver, SnapshotMeta, SnapshotWriter};
use super::super::chunker::MAX_SCALE;
use super::super::error::{Error, Result};
use super::super::format::blob::{Compression, Dictionary};
use super::super::format::config::{PROFILE_DEFAULT, PROFILE_LINES, PROFILE_SMALL};
use super::super::format::snapshot::{CopiedFrom, Snapshot};
use super::super::format::tree::{Node, NodeKind};
use super::super::id::Id;
use super::super::reader::BlobStream;
use super::super::repository::Repository;
use super::super::saver::Progress;

#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    pub copy: Id,
    /// Files read from the source and chunked again.
    pub files_read: u64,
    /// Files whose data the destination already had from an earlier copy.
    pub files_reused: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// (source, existing copy) pairs that needed nothing.
    pub already_present: Vec<(Id, Id)>,
}

/// A source file's chunk list → the destination's chunk list for the same bytes.
type Memo = HashMap<blake3::Hash, (Vec<Id>, u64)>;

fn content_key(content: &[Id]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for id in content {
        h.update(&id.0);
    }
    h.finalize()
}

/// Copy `wanted` (source snapshots) from `src` into `dst`, oldest first,
/// skipping those `dst` already holds a copy of. `progress` counts the
/// current snapshot's bytes.
pub fn copy_snapshots(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    wanted: &[(Id, Snapshot)],
    threads: usize,
    progress: &dyn Fn(&Id, Arc<Progress>),
) -> Result<CopyReport> {
    src.load_index()?;
    dst.load_index()?;
    let src_repo_id = src.config().id;
    let (existing, _) = dst.list_snapshots()?;
    // Source snapshot → its copy, for copies made from this source repository.
    let copies: HashMap<Id, (Id, Snapshot)> = existing
        .into_iter()
        .filter_map(|(id, s)| match s.copied_from {
            Some(c) if c.repository == src_repo_id => Some((c.snapshot, (id, s))),
            _ => None,
        })
        .collect();
    let mut wanted = wanted.to_vec();
    wanted.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));

    let mut report = CopyReport::default();
    let mut memo = Memo::new();
    // Earlier copies already walked into `memo`.
    let mut learned: HashSet<Id> = HashSet::new();
    for (src_id, snap) in &wanted {
        if let Some((copy_id, _)) = copies.get(src_id) {
            report.already_present.push((*src_id, *copy_id));
            continue;
        }
        // Learn from the newest earlier copy of the same source, once.
        let earlier = copies
            .iter()
            .filter(|(_, (_, c))| c.host == snap.host && c.source == snap.source && c.time <= snap.time)
            .max_by_key(|(_, (_, c))| c.time);
        if let Some((earlier_src, (earlier_copy, copy))) = earlier {
            if learned.insert(*earlier_copy) {
                if let Ok(original) = src.read_snapshot(earlier_src) {
                    learn(src, dst, &original.tree, &copy.tree, &mut memo, &mut HashSet::new())?;
                }
            }
        }
        let stats = Arc::new(Progress::default());
        progress(src_id, stats.clone());
        let mut writer = SnapshotWriter::new(dst.clone(), stats.clone())?;
        let mut counts = (0u64, 0u64);
        let mut files = Files { memo: &memo, dictionaries: HashMap::new(), counts: &mut counts };
        copy_tree(src, dst, &mut writer, &snap.tree, &mut Vec::new(), &mut files, threads)?;
        let meta = SnapshotMeta {
            time: Some(snap.time),
            host: Some(snap.host.clone()),
            tags: snap.tags.clone(),
            source: snap.source.clone(),
            extra: snap.extra.clone(),
        };
        let (copy_id, copy) = writer.finish_with(meta, |s| {
            s.username = snap.username.clone();
            s.lost = snap.lost.clone();
            s.copied_from = Some(CopiedFrom { repository: src_repo_id, snapshot: *src_id });
        })?;
        learn(src, dst, &snap.tree, &copy.tree, &mut memo, &mut HashSet::new())?;
        report.copied.push(CopiedSnapshot {
            source: *src_id,
            copy: copy_id,
            files_read: counts.0,
            files_reused: counts.1,
            bytes_read: Progress::get(&stats.bytes_read),
            bytes_added: copy.summary.bytes_added,
        });
    }
    Ok(report)
}

/// Walk a source tree and its copy together, remembering for each file the
/// destination's chunk list for the source's.
fn learn(
    src: &Repository,
    dst: &Repository,
    src_tree: &Id,
    dst_tree: &Id,
    memo: &mut Memo,
    seen: &mut HashSet<(Id, Id)>,
) -> Result<()> {
    if !seen.insert((*src_tree, *dst_tree)) {
        return Ok(());
    }
    let theirs = src.read_tree(src_tree)?;
    let ours = dst.read_tree(dst_tree)?;
    let by_name: HashMap<Vec<u8>, &Node> = ours.nodes.iter().map(|n| (n.name_bytes(), n)).collect();
    for s in &theirs.nodes {
        let Some(d) = by_name.get(&s.name_bytes()) else { continue };
        match (s.kind, d.kind) {
            (NodeKind::File, NodeKind::File) if s.size == d.size => {
                memo.insert(content_key(&s.content), (d.content.clone(), d.size));
            }
            (NodeKind::Dir, NodeKind::Dir) => {
                if let (Some(st), Some(dt)) = (&s.subtree, &d.subtree) {
                    learn(src, dst, st, dt, memo, seen)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The chunker profile (and scale) a file was most likely cut with: the
/// line profile at the smallest scale whose maximum every chunk but the
/// last fits, when the first chunks all end a line; else the small
/// profile when they fit its maximum. A wrong guess costs only
/// deduplication, never correctness.
fn guess_profile(src: &Repository, dst: &Repository, content: &[Id]) -> Result<(&'static str, u8)> {
    if content.len() < 2 {
        return Ok((PROFILE_DEFAULT, 0));
    }
    let inner = &content[..content.len() - 1];
    let largest = {
        let index = src.index();
        inner.iter().map(|id| index.get(id).map_or(u32::MAX, |l| l.raw_length)).max().unwrap_or(0)
    };
    let config = dst.config();
    let line_scale = config.chunker.get(PROFILE_LINES).and_then(|lines| {
        (0..=MAX_SCALE).find(|&k| {
            let scaled = lines.scaled(k);
            largest <= scaled.max_size && scaled.validate().is_ok()
        })
    });
    let ends_lines = || -> Result<bool> {
        let mut ends = true;
        for id in inner.iter().take(4) {
            ends &= src.read_blob(id)?.last() == Some(&b'\n');
        }
        Ok(ends)
    };
    let small_fits = config.chunker.get(PROFILE_SMALL).is_some_and(|small| largest <= small.max_size);
    match line_scale {
        Some(0) if ends_lines()? => Ok((PROFILE_LINES, 0)),
        _ if small_fits => Ok((PROFILE_SMALL, 0)),
        Some(k) if k > 0 && ends_lines()? => Ok((PROFILE_LINES, k)),
        _ => Ok((PROFILE_DEFAULT, 0)),
    }
}

/// What copying one snapshot's files keeps track of.
struct Files<'a> {
    memo: &'a Memo,
    /// Source dictionary → the destination's copy, stored by this
    /// snapshot's writer.
    dictionaries: HashMap<Id, Arc<Dictionary>>,
    /// Files read, files reused.
    counts: &'a mut (u64, u64),
}

/// The destination's copy of the dictionary the source compressed a
/// file's chunks with (named by its first chunk that has one), so the
/// copy stores as little as the original. Chunks of one stream share one
/// dictionary; a chunk deduplicated from another stream may name another,
/// and is then compressed with this one in the copy.
fn copy_dictionary(
    src: &Repository,
    saver: &ContentSaver,
    content: &[Id],
    copied: &mut HashMap<Id, Arc<Dictionary>>,
) -> Result<Option<Arc<Dictionary>>> {
    let first = {
        let index = src.index();
        content.iter().find(|id| index.get(id).is_some_and(|l| l.compression == Compression::ZstdDictionary)).copied()
    };
    let Some(source) = first.map(|blob| src.dictionary_of(&blob)).transpose()?.flatten() else { return Ok(None) };
    if let Some(d) = copied.get(&source) {
        return Ok(Some(d.clone()));
    }
    let bytes = src.read_dictionary(&source)?;
    let prepared = saver
        .prepare_dictionary(&bytes)
        .ok_or_else(|| Error::Invalid(format!("dictionary {} cannot be used", source.short())))?;
    let dictionary = saver.store_dictionary(bytes, prepared)?;
    copied.insert(source, dictionary.clone());
    Ok(Some(dictionary))
}

fn copy_tree(
    src: &Arc<Repository>,
    dst: &Repository,
    writer: &mut SnapshotWriter,
    tree: &Id,
    path: &mut Vec<Vec<u8>>,
    files: &mut Files,
    threads: usize,
) -> Result<()> {
    let t = src.read_tree(tree)?;
    for node in t.nodes {
        path.push(node.name_bytes());
        match node.kind {
            NodeKind::Dir => {
                let subtree = node.subtree;
                writer.add_dir(path.clone(), Node { subtree: None, ..node })?;
                if let Some(sub) = subtree {
                    copy_tree(src, dst, writer, &sub, path, files, threads)?;
                }
            }
            NodeKind::Symlink => writer.add_symlink(path.clone(), node)?,
            NodeKind::File => {
                let known = files
                    .memo
                    .get(&content_key(&node.content))
                    .filter(|(ids, size)| *size == node.size && ids.iter().all(|id| dst.index().contains(id)));
                if let Some((ids, _)) = known {
                    files.counts.1 += 1;
                    writer.add_existing(path.clone(), Node { content: ids.clone(), ..node })?;
                } else {
                    files.counts.0 += 1;
                    let label = display_path(path);
                    let (profile, scale) = guess_profile(src, dst, &node.content)?;
                    let saver = writer.content_saver();
                    let dictionary = copy_dictionary(src, &saver, &node.content, &mut files.dictionaries)?;
                    let stream = BlobStream::open(src.clone(), node.content.clone(), threads);
                    let content = saver.save_compressed_with(stream, profile, scale, dictionary, &label)?;
                    if content.size != node.size {
                        return Err(Error::Invalid(format!(
                            "{label}: read {} bytes from the source but the snapshot records {}",
                            content.size, node.size
                        )));
                    }
                    writer.add_content(path.clone(), Node { content: Vec::new(), ..node }, content)?;
                }
            }
        }
        path.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_support::{memory_repo, store_file_with};

    /// Rows of about 100 bytes, `n` of them.
    fn rows(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{i}\t{}\t{}\n", i % 97, "x".repeat(80 + i % 13)).into_bytes()).collect()
    }

    /// A copy re-cuts a file as it was cut: line profile at its scale,
    /// small profile, or the default one.
    #[test]
    fn the_profile_and_scale_a_file_was_cut_with_are_recognised() {
        let (src, dst) = (memory_repo(), memory_repo());
        let data = rows(60_000);
        for scale in 0..=MAX_SCALE {
            let node = store_file_with(&src, |w| {
                w.content_saver().save_scaled(&data[..], PROFILE_LINES, scale, "rows", false).unwrap()
            });
            assert!(node.content.len() > 4, "scale {scale}: {} chunks", node.content.len());
            assert_eq!(guess_profile(&src, &dst, &node.content).unwrap(), (PROFILE_LINES, scale));
        }
        let node = store_file_with(&src, |w| w.content_saver().save(&data[..], PROFILE_SMALL, "rows", false).unwrap());
        assert_eq!(guess_profile(&src, &dst, &node.content).unwrap(), (PROFILE_SMALL, 0));
        let node =
            store_file_with(&src, |w| w.content_saver().save(&data[..], PROFILE_DEFAULT, "rows", false).unwrap());
        assert_eq!(guess_profile(&src, &dst, &node.content).unwrap(), (PROFILE_DEFAULT, 0));
    }

    /// A file the source compressed with a dictionary is compressed with
    /// the destination's copy of it, and reads back the same.
    #[test]
    fn dictionaries_are_copied_with_the_files_that_use_them() {
        use crate::repo::format::blob::BlobType;
        let (src, dst) = (memory_repo(), memory_repo());
        let data = rows(20_000);
        let sizes: Vec<usize> = data[..200_000].split_inclusive(|b| *b == b'\n').map(|l| l.len()).collect();
        let trained = zstd::dict::from_continuous(&data[..sizes.iter().sum()], &sizes, 16 << 10).unwrap();
        let node = store_file_with(&src, |w| {
            let saver = w.content_saver();
            let d = saver.store_dictionary(trained.clone(), saver.prepare_dictionary(&trained).unwrap()).unwrap();
            saver.save_compressed_with(&data[..], PROFILE_LINES, 0, Some(d), "rows").unwrap()
        });
        assert!(src.dictionary_of(&node.content[0]).unwrap().is_some());
        let (snapshots, _) = src.list_snapshots().unwrap();
        let report = copy_snapshots(&src, &dst, &snapshots, 2, &|_, _| {}).unwrap();
        let copy = dst.read_snapshot(&report.copied[0].copy).unwrap();
        let copied = crate::repo::ops::walk::find_node(&dst, &copy.tree, &[b"f".to_vec()]).unwrap().unwrap();
        let named = dst.dictionary_of(&copied.content[0]).unwrap().expect("compressed with a dictionary");
        assert_eq!(dst.index().get(&named).unwrap().blob_type, BlobType::Dictionary);
        assert_eq!(dst.read_dictionary(&named).unwrap(), trained);
        let back: Vec<u8> = copied.content.iter().flat_map(|id| dst.read_blob(id).unwrap()).collect();
        assert_eq!(back, data);
    }
}
