//! Index files: which pack holds each blob, at which offset.
//!
//! Binary rather than JSON because a repository holds millions of entries;
//! the plaintext is zstd-compressed before sealing (ids do not compress,
//! but offsets, lengths and type bytes do).

use super::super::crypto::MasterKey;
use super::super::id::Id;
use super::blob::{BlobType, Compression};
use super::{malformed, open_file, seal_file, Cursor, FormatError, SealedKind};

const BLOB_LEN: usize = 1 + 1 + 32 + 4 + 4 + 4;
/// An index file's plaintext may not decompress beyond this: a bound for
/// hostile inputs, far above what `INDEX_FILE_MAX_BLOBS` produces.
const MAX_PLAINTEXT: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexBlob {
    pub blob_type: BlobType,
    pub compression: Compression,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexPack {
    pub id: Id,
    pub blobs: Vec<IndexBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFile {
    /// Index files this one replaces (written by `repair index` and prune);
    /// readers ignore superseded files that still exist.
    pub supersedes: Vec<Id>,
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }

    pub fn encode_plain(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.supersedes.len() * 32 + self.packs.len() * 36 + self.blob_count() * BLOB_LEN);
        out.push(1);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                out.push(b.blob_type as u8);
                out.push(b.compression as u8);
                out.extend_from_slice(&b.id.0);
                out.extend_from_slice(&b.offset.to_le_bytes());
                out.extend_from_slice(&b.length.to_le_bytes());
                out.extend_from_slice(&b.raw_length.to_le_bytes());
            }
        }
        out
    }

    pub fn decode_plain(plain: &[u8]) -> Result<IndexFile, FormatError> {
        let mut c = Cursor::new(plain, "index");
        let version = c.u8()?;
        if version != 1 {
            return Err(FormatError::UnsupportedVersion(version as u32));
        }
        let n = c.count(32)?;
        let mut supersedes = Vec::with_capacity(n);
        for _ in 0..n {
            supersedes.push(c.id()?);
        }
        let n = c.count(36)?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = c.id()?;
            let m = c.count(BLOB_LEN)?;
            let mut blobs = Vec::with_capacity(m);
            for _ in 0..m {
                let blob_type = BlobType::from_u8(c.u8()?)?;
                let compression = Compression::from_u8(c.u8()?)?;
                let blob_id = c.id()?;
                let offset = c.u32()?;
                let length = c.u32()?;
                let raw_length = c.u32()?;
                if offset.checked_add(length).is_none() {
                    return Err(malformed("index", "blob extends past 4 GiB"));
                }
                blobs.push(IndexBlob { blob_type, compression, id: blob_id, offset, length, raw_length });
            }
            packs.push(IndexPack { id, blobs });
        }
        c.finish()?;
        Ok(IndexFile { supersedes, packs })
    }

    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        let compressed =
            zstd::bulk::compress(&self.encode_plain(), 3).expect("zstd compression of an index cannot fail");
        seal_file(key, SealedKind::Index, &compressed)
    }

    pub fn open(key: &MasterKey, bytes: &[u8]) -> Result<IndexFile, FormatError> {
        let compressed = open_file(key, SealedKind::Index, bytes)?;
        Self::decode_plain(&decompress_bounded(&compressed)?)
    }
}

/// Decompress a zstd frame without trusting the size it claims.
fn decompress_bounded(compressed: &[u8]) -> Result<Vec<u8>, FormatError> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(|e| malformed("index", format!("zstd: {e}")))?;
    let mut out = Vec::new();
    decoder
        .take(MAX_PLAINTEXT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed("index", format!("zstd: {e}")))?;
    if out.len() > MAX_PLAINTEXT {
        return Err(malformed("index", "decompresses beyond 1 GiB"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(packs: usize, blobs: usize) -> IndexFile {
        IndexFile {
            supersedes: vec![Id([9; 32])],
            packs: (0..packs)
                .map(|p| IndexPack {
                    id: Id([p as u8; 32]),
                    blobs: (0..blobs)
                        .map(|b| IndexBlob {
                            blob_type: if b % 2 == 0 { BlobType::Data } else { BlobType::Tree },
                            compression: Compression::Zstd,
                            id: Id([(b * 7 + p) as u8; 32]),
                            offset: (b * 100) as u32,
                            length: 100,
                            raw_length: 250,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn sealed_round_trip() {
        let k = MasterKey::generate();
        let idx = sample(3, 5);
        assert_eq!(IndexFile::open(&k, &idx.seal(&k)).unwrap(), idx);
        assert!(IndexFile::open(&MasterKey::generate(), &idx.seal(&k)).is_err());
    }

    proptest! {
        #[test]
        fn plain_round_trip(p in 0usize..5, b in 0usize..20) {
            let idx = sample(p, b);
            prop_assert_eq!(IndexFile::decode_plain(&idx.encode_plain()).unwrap(), idx);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IndexFile::decode_plain(&bytes);
        }
    }
}
