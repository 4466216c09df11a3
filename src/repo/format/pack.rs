//! Packs: `blob* | sealed header | u32 LE header length | "SNPK"`.
//!
//! The header sits at the end so a pack can be written in one pass while
//! blobs stream in. Offsets are not stored: each blob starts where the
//! previous one ended, which also makes overlapping entries impossible.

use super::super::crypto::MasterKey;
use super::super::id::Id;
use super::blob::{BlobType, Compression};
use super::{malformed, open_file, seal_file, Cursor, FormatError, SealedKind};

pub const TRAILER_MAGIC: &[u8; 4] = b"SNPK";
pub const TRAILER_LEN: usize = 8;
const ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub compression: Compression,
    pub id: Id,
    /// Stored (sealed) length in the pack.
    pub length: u32,
    /// Plaintext length after opening and decompressing.
    pub raw_length: u32,
}

/// An entry with its offset, as listed by a parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocatedEntry {
    pub entry: PackEntry,
    pub offset: u32,
}

pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + entries.len() * ENTRY_LEN);
    out.push(1);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.blob_type as u8);
        out.push(e.compression as u8);
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

/// Parse a header's plaintext and lay its entries out from offset 0.
/// `blobs_len`, when known, is the number of bytes before the header; the
/// entries must cover it exactly.
pub fn decode_header(plaintext: &[u8], blobs_len: Option<u64>) -> Result<Vec<LocatedEntry>, FormatError> {
    let mut c = Cursor::new(plaintext, "pack header");
    let version = c.u8()?;
    if version != 1 {
        return Err(FormatError::UnsupportedVersion(version as u32));
    }
    let n = c.count(ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    let mut offset: u64 = 0;
    for _ in 0..n {
        let blob_type = BlobType::from_u8(c.u8()?)?;
        let compression = Compression::from_u8(c.u8()?)?;
        let id = c.id()?;
        let length = c.u32()?;
        let raw_length = c.u32()?;
        if offset + length as u64 > u32::MAX as u64 {
            return Err(malformed("pack header", "blobs extend past 4 GiB"));
        }
        out.push(LocatedEntry {
            entry: PackEntry { blob_type, compression, id, length, raw_length },
            offset: offset as u32,
        });
        offset += length as u64;
    }
    c.finish()?;
    if let Some(expected) = blobs_len {
        if offset != expected {
            return Err(malformed(
                "pack header",
                format!("entries cover {offset} bytes but the pack holds {expected}"),
            ));
        }
    }
    Ok(out)
}

/// What follows the blobs of a pack: its sealed header and the trailer.
pub fn pack_tail(key: &MasterKey, entries: &[PackEntry]) -> Vec<u8> {
    let mut tail = seal_file(key, SealedKind::PackHeader, &encode_header(entries));
    let header_len = tail.len() as u32;
    tail.extend_from_slice(&header_len.to_le_bytes());
    tail.extend_from_slice(TRAILER_MAGIC);
    tail
}

/// Seal a header and append it with the trailer to the blob bytes.
#[cfg(test)]
pub fn finish_pack(key: &MasterKey, mut blobs: Vec<u8>, entries: &[PackEntry]) -> Vec<u8> {
    blobs.extend_from_slice(&pack_tail(key, entries));
    blobs
}

/// Length of the sealed header, read from a pack's last 8 bytes.
pub fn parse_trailer(trailer: &[u8]) -> Result<u32, FormatError> {
    if trailer.len() != TRAILER_LEN || &trailer[4..] != TRAILER_MAGIC {
        return Err(malformed("pack trailer", "missing SNPK trailer"));
    }
    Ok(u32::from_le_bytes(trailer[..4].try_into().unwrap()))
}

/// Parse a header given the tail of a pack (`tail` holds at least the sealed
/// header and trailer) and the pack's total size.
pub fn read_header(key: &MasterKey, tail: &[u8], pack_size: u64) -> Result<Vec<LocatedEntry>, FormatError> {
    if tail.len() < TRAILER_LEN {
        return Err(malformed("pack", "shorter than its trailer"));
    }
    let header_len = parse_trailer(&tail[tail.len() - TRAILER_LEN..])? as usize;
    if header_len + TRAILER_LEN > tail.len() || (header_len + TRAILER_LEN) as u64 > pack_size {
        return Err(malformed("pack", "header length exceeds the pack"));
    }
    let sealed = &tail[tail.len() - TRAILER_LEN - header_len..tail.len() - TRAILER_LEN];
    let plain = open_file(key, SealedKind::PackHeader, sealed)?;
    decode_header(&plain, Some(pack_size - (header_len + TRAILER_LEN) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u8, length: u32) -> PackEntry {
        PackEntry {
            blob_type: BlobType::Data,
            compression: Compression::Zstd,
            id: Id([i; 32]),
            length,
            raw_length: length * 2,
        }
    }

    #[test]
    fn pack_round_trip() {
        let k = MasterKey::generate();
        let entries = vec![entry(1, 10), entry(2, 5)];
        let pack = finish_pack(&k, vec![7u8; 15], &entries);
        let parsed = read_header(&k, &pack, pack.len() as u64).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].offset, 10);
        assert_eq!(parsed[1].entry, entries[1]);
        // A header that does not cover the blob bytes is rejected.
        let short = finish_pack(&k, vec![7u8; 16], &entries);
        assert!(read_header(&k, &short, short.len() as u64).is_err());
    }

    proptest! {
        #[test]
        fn header_encoding_round_trips(lens in proptest::collection::vec(0u32..100_000, 0..50)) {
            let entries: Vec<PackEntry> = lens.iter().enumerate().map(|(i, l)| entry(i as u8, *l)).collect();
            let decoded = decode_header(&encode_header(&entries), None).unwrap();
            prop_assert_eq!(decoded.iter().map(|e| e.entry).collect::<Vec<_>>(), entries);
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_header(&bytes, None);
        }
    }
}
