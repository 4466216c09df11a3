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
