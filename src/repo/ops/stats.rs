//! `snap stats`: what the repository holds and what deduplication and
//! compression saved.

use super::super::backend::FileKind;
use super::super::error::Result;
use super::super::format::blob::BlobType;
use super::super::index::MasterIndex;
use super::super::repository::Repository;

#[derive(Debug, Default, serde::Serialize)]
pub struct RepoStats {
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub index_files: usize,
    pub index_bytes: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    pub dictionary_blobs: u64,
    /// Stored bytes of the dictionaries.
    pub dictionary_bytes: u64,
    /// Plaintext bytes of all unique blobs.
    pub unique_raw_bytes: u64,
    /// Stored (compressed, sealed) bytes of all unique blobs.
    pub unique_stored_bytes: u64,
    /// Sum of bytes read by all snapshots: what a restore of each would write.
    pub snapshots_bytes_read: u64,
    pub index_memory_bytes_per_blob: usize,
}

pub fn stats(repo: &Repository) -> Result<RepoStats> {
    repo.load_index()?;
    let mut s = RepoStats::default();
    let packs = repo.backend().list(FileKind::Pack)?;
    s.packs = packs.len();
    s.pack_bytes = packs.iter().map(|p| p.size).sum();
    let idx = repo.backend().list(FileKind::Index)?;
    s.index_files = idx.len();
    s.index_bytes = idx.iter().map(|p| p.size).sum();
    for (_, loc) in repo.index().iter() {
        match loc.blob_type {
            BlobType::Data => s.data_blobs += 1,
            BlobType::Tree => s.tree_blobs += 1,
            BlobType::Dictionary => {
                s.dictionary_blobs += 1;
                s.dictionary_bytes += loc.length as u64;
            }
        }
        s.unique_raw_bytes += loc.raw_length as u64;
        s.unique_stored_bytes += loc.length as u64;
    }
    let (snaps, _) = repo.list_snapshots()?;
    s.snapshots = snaps.len();
    s.snapshots_bytes_read = snaps.iter().map(|(_, x)| x.summary.bytes_read).sum();
    s.index_memory_bytes_per_blob = MasterIndex::bytes_per_blob();
    Ok(s)
}
