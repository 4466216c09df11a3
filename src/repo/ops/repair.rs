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

/// Blobs per new index file: keeps each file a few megabytes.
const BLOBS_PER_FILE: usize = 100_000;

#[derive(Debug, Default, serde::Serialize)]
pub struct RepairIndexReport {
    pub packs: usize,
    pub blobs: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Packs whose header could not be read; their blobs are not indexed.
    pub unreadable_packs: Vec<String>,
}

pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    let mut report = RepairIndexReport::default();
    let old: Vec<String> = repo.backend().list(FileKind::Index)?.into_iter().map(|f| f.name).collect();
    let mut current = IndexFile::default();
    let mut written = Vec::new();
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
                current.packs.push(IndexPack { id, blobs });
                if current.blob_count() >= BLOBS_PER_FILE {
                    written.push(repo.write_index_file(&std::mem::take(&mut current))?.0);
                }
            }
            Err(e) => report.unreadable_packs.push(format!("{}: {e}", pack_path(&p.name))),
        }
    }
    if !current.packs.is_empty() {
        written.push(repo.write_index_file(&current)?.0);
    }
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
