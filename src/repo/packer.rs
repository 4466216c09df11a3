//! Filling a pack with already sealed blobs and writing it out.
//!
//! Shared by the save pipeline (fresh blobs) and prune (blobs copied out of
//! packs being repacked, still sealed: a blob's seal does not depend on
//! where it is stored).

use super::backend::FileKind;
use super::error::Result;
use super::format::index::{IndexBlob, IndexPack};
use super::format::pack::{finish_pack, PackEntry};
use super::id::Id;
use super::repository::Repository;

/// Pack buffers, kept for the next pack instead of freed. A pack-sized
/// buffer freed and allocated again every few hundred milliseconds makes
/// glibc either map and fault in fresh pages each time or leave a
/// fragmented heap behind; reusing a few avoids both.
static SPARE_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// More than the packs a save pipeline holds at once (two filling, one
/// handed over, up to four being written).
const SPARE_MAX: usize = 4;

fn take_buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARE_BUFFERS.lock().unwrap_or_else(|p| p.into_inner()).pop();
    match spare {
        Some(mut b) => {
            b.reserve(capacity);
            b
        }
        None => Vec::with_capacity(capacity),
    }
}

fn give_back(mut buffer: Vec<u8>) {
    buffer.clear();
    let mut spare = SPARE_BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    if spare.len() < SPARE_MAX {
        spare.push(buffer);
    }
}

#[derive(Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder::default()
    }

    /// Append one sealed blob. The first call reserves room for a full pack
    /// so appending never reallocates mid-pack.
    pub fn push(&mut self, entry: PackEntry, stored: &[u8], pack_size: usize) {
        if self.bytes.capacity() == 0 {
            self.bytes = take_buffer(pack_size + pack_size / 8);
        }
        self.bytes.extend_from_slice(stored);
        self.entries.push(entry);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal the header, write the pack durably under the hash of its bytes,
    /// and return its index entry and stored size. The caller must make an
    /// index file listing it durable before anything refers to its blobs.
    pub fn write(self, repo: &Repository) -> Result<(IndexPack, u64)> {
        let mut blobs = Vec::with_capacity(self.entries.len());
        let mut offset = 0u32;
        for e in &self.entries {
            blobs.push(IndexBlob {
                blob_type: e.blob_type,
                compression: e.compression,
                id: e.id,
                offset,
                length: e.length,
                raw_length: e.raw_length,
            });
            offset += e.length;
        }
        let bytes = finish_pack(repo.key(), self.bytes, &self.entries);
        let id = Id::of_bytes(&bytes);
        let written = repo.backend().write(FileKind::Pack, &id.to_hex(), &bytes);
        let len = bytes.len() as u64;
        give_back(bytes);
        written?;
        Ok((IndexPack { id, blobs }, len))
    }
}
