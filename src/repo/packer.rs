//! Filling a pack with already sealed blobs and writing it out.
//!
//! Shared by the save pipeline (fresh blobs) and prune (blobs copied out of
//! packs being repacked, still sealed: a blob's seal does not depend on
//! where it is stored).

use super::backend::{FileKind, StagedFile};
use super::error::Result;
use super::format::index::{IndexBlob, IndexPack};
use super::format::pack::{pack_tail, PackEntry};
use super::id::Id;
use super::repository::Repository;

/// Pack buffers (of backends that cannot stage files), kept for the next
/// pack instead of freed. A pack-sized buffer freed and allocated again
/// every few hundred milliseconds makes glibc either map and fault in
/// fresh pages each time or leave a fragmented heap behind; reusing a few
/// avoids both.
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

/// Where a filling pack's bytes go: a file the backend stages (a local
/// repository: the page cache holds them, not this process), or memory
/// to be written whole (object storage).
#[derive(Default)]
enum Sink {
    #[default]
    Unopened,
    Staged(Box<dyn StagedFile>),
    Memory(Vec<u8>),
}

#[derive(Default)]
pub struct PackBuilder {
    sink: Sink,
    /// The pack is named by the BLAKE3 of its bytes, hashed as they go by.
    hasher: blake3::Hasher,
    len: usize,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder::default()
    }

    /// Append one sealed blob. The first call opens a staged file, or
    /// reserves memory for a full pack so appending never reallocates.
    pub fn push(&mut self, repo: &Repository, entry: PackEntry, stored: &[u8], pack_size: usize) -> Result<()> {
        if let Sink::Unopened = self.sink {
            self.sink = match repo.backend().stage(FileKind::Pack)? {
                Some(staged) => Sink::Staged(staged),
                None => Sink::Memory(take_buffer(pack_size + pack_size / 8)),
            };
        }
        self.append(stored)?;
        self.entries.push(entry);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.sink {
            Sink::Staged(staged) => staged.append(bytes)?,
            Sink::Memory(buffer) => buffer.extend_from_slice(bytes),
            Sink::Unopened => unreachable!("pack sink opened before the first append"),
        }
        self.hasher.update(bytes);
        self.len += bytes.len();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal the header, write the pack durably under the hash of its bytes,
    /// and return its index entry and stored size. The caller must make an
    /// index file listing it durable before anything refers to its blobs.
    pub fn write(mut self, repo: &Repository) -> Result<(IndexPack, u64)> {
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
        let tail = pack_tail(repo.key(), &self.entries);
        self.append(&tail)?;
        let id = Id(*self.hasher.finalize().as_bytes());
        let len = self.len as u64;
        match std::mem::take(&mut self.sink) {
            Sink::Staged(staged) => staged.commit(&id.to_hex())?,
            Sink::Memory(bytes) => {
                let written = repo.backend().write(FileKind::Pack, &id.to_hex(), &bytes);
                give_back(bytes);
                written?;
            }
            Sink::Unopened => unreachable!("an empty pack is never written"),
        }
        Ok((IndexPack { id, blobs }, len))
    }
}
