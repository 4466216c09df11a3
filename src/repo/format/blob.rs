//! Blobs: one chunk of file data or one serialised tree, compressed and
//! sealed on its own so it can be read back with a single ranged read.

use super::super::crypto::MasterKey;
use super::super::id::Id;
use super::{malformed, FormatError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobType {
    Data = 0,
    Tree = 1,
}

impl BlobType {
    pub fn from_u8(b: u8) -> Result<BlobType, FormatError> {
        match b {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            _ => Err(malformed("blob", format!("unknown blob type {b}"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

impl Compression {
    pub fn from_u8(b: u8) -> Result<Compression, FormatError> {
        match b {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Zstd),
            _ => Err(malformed("blob", format!("unknown compression {b}"))),
        }
    }
}

/// Associated data of a sealed blob: a blob cannot be passed off as another
/// id, another type, or as compressed when it is not.
fn blob_ad(blob_type: BlobType, compression: Compression, id: &Id) -> [u8; 42] {
    let mut ad = [0u8; 42];
    ad[..8].copy_from_slice(b"SNAPBLOB");
    ad[8] = blob_type as u8;
    ad[9] = compression as u8;
    ad[10..].copy_from_slice(&id.0);
    ad
}

/// Reusable compression state for one worker thread.
pub struct BlobEncoder {
    /// At the repository's level.
    compressor: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Level 1, for judging samples of large blobs quickly, and for large
    /// blobs that a higher level would not shrink further.
    fast: zstd::bulk::Compressor<'static>,
}

/// Blobs at least this large are sampled before being compressed whole.
const SAMPLE_FROM: usize = 256 * 1024;
const SAMPLE_LEN: usize = 16 * 1024;

pub struct EncodedBlob {
    pub compression: Compression,
    pub bytes: Vec<u8>,
}

/// What samples of a large blob say about compressing it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Already compressed (media, archives): store it raw.
    Incompressible,
    /// Level 1 does as well as the repository's level.
    Fast,
    /// The repository's level is worth its cost.
    Configured,
}

impl BlobEncoder {
    pub fn new(level: i32) -> BlobEncoder {
        BlobEncoder {
            compressor: zstd::bulk::Compressor::new(level).expect("valid zstd level"),
            level,
            fast: zstd::bulk::Compressor::new(1).expect("valid zstd level"),
        }
    }

    /// Judge a large blob by 16 KiB samples from its start, middle and end.
    /// If level 1 cannot shrink any of them by 1/32, it looks already
    /// compressed: compressing 1 MiB of random bytes at level 3 only to
    /// throw the result away costs more than hashing and sealing it, the
    /// samples a twentieth of that. Otherwise the first compressible sample
    /// is also compressed at the repository's level. On text of random
    /// symbols from a small alphabet (hex digits, random identifiers)
    /// zstd's level 3 finds only useless short matches: it runs at a
    /// quarter of level 1's speed (70 against 300 MB/s) and comes out 4%
    /// larger, and a 16 KiB sample shows that. So level 1 is used where the
    /// higher level makes the sample larger by 1/32 and level 1 could not
    /// shrink it to a quarter. The second condition keeps level 3 for very
    /// compressible data, where a sample's few hundred bytes are noise: it
    /// wins there on whole blobs (a dump's 1 MiB chunks: 3–9% smaller)
    /// even where it loses on a sample.
    fn judge(&mut self, plaintext: &[u8]) -> Verdict {
        if plaintext.len() < SAMPLE_FROM {
            return Verdict::Configured;
        }
        let last = plaintext.len() - SAMPLE_LEN;
        for at in [0, last / 2, last] {
            let sample = &plaintext[at..at + SAMPLE_LEN];
            let fast = match self.fast.compress(sample) {
                Ok(c) if c.len() + SAMPLE_LEN / 32 < SAMPLE_LEN => c.len(),
                _ => continue,
            };
            if self.level <= 1 {
                return Verdict::Fast;
            }
            let configured = self.compressor.compress(sample).map_or(usize::MAX, |c| c.len());
            let worse = configured > fast + fast / 32;
            return if worse && fast >= SAMPLE_LEN / 4 { Verdict::Fast } else { Verdict::Configured };
        }
        Verdict::Incompressible
    }

    /// Compress when that saves at least 1/32 of the size (else store raw:
    /// already-compressed media costs nothing to decode), then seal.
    pub fn encode(&mut self, key: &MasterKey, blob_type: BlobType, id: &Id, plaintext: &[u8]) -> EncodedBlob {
        let compressor = match self.judge(plaintext) {
            Verdict::Incompressible => None,
            Verdict::Fast => Some(&mut self.fast),
            Verdict::Configured => Some(&mut self.compressor),
        };
        let compressed = compressor
            .and_then(|c| c.compress(plaintext).ok())
            .filter(|c| c.len() + plaintext.len() / 32 < plaintext.len());
        let (compression, payload): (Compression, &[u8]) = match &compressed {
            Some(c) => (Compression::Zstd, c),
            None => (Compression::None, plaintext),
        };
        let bytes = key.seal(&blob_ad(blob_type, compression, id), payload);
        EncodedBlob { compression, bytes }
    }
}

thread_local! {
    /// One decompression context per thread: creating one for every blob
    /// (a large allocation and reset each time) was 45% of the CPU of a
    /// database restore, whose blobs are a few KiB each.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(payload: &[u8], raw_length: usize) -> Result<Vec<u8>, FormatError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot
                .insert(zstd::bulk::Decompressor::new().map_err(|e| malformed("blob", format!("zstd context: {e}")))?),
        };
        decompressor.decompress(payload, raw_length).map_err(|e| malformed("blob", format!("zstd: {e}")))
    })
}

/// Open, decompress and check a stored blob against the id it is filed under.
pub fn decode_blob(
    key: &MasterKey,
    blob_type: BlobType,
    compression: Compression,
    id: &Id,
    raw_length: u32,
    stored: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let payload = key.open(&blob_ad(blob_type, compression, id), stored)?;
    let plaintext = match compression {
        Compression::None => payload,
        Compression::Zstd => decompress(&payload, raw_length as usize)?,
    };
    if plaintext.len() != raw_length as usize {
        return Err(malformed("blob", format!("length {} where the index says {raw_length}", plaintext.len())));
    }
    if key.blob_id(&plaintext) != *id {
        return Err(malformed("blob", "content does not match its id"));
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_media_is_stored_raw_without_a_full_try_and_mixed_blobs_still_compress() {
        let k = MasterKey::generate();
        let mut enc = BlobEncoder::new(3);
        let mut random = vec![0u8; 1 << 20];
        getrandom::getrandom(&mut random).unwrap();
        assert_eq!(enc.judge(&random), Verdict::Incompressible);
        let id = k.blob_id(&random);
        assert_eq!(enc.encode(&k, BlobType::Data, &id, &random).compression, Compression::None);
        // Media first, text after: the later samples see the text.
        let mut mixed = random[..512 << 10].to_vec();
        mixed.extend_from_slice(&b"row 1\tsome text\n".repeat(40_000));
        assert_ne!(enc.judge(&mixed), Verdict::Incompressible);
        let id = k.blob_id(&mixed);
        let e = enc.encode(&k, BlobType::Data, &id, &mixed);
        assert_eq!(e.compression, Compression::Zstd);
        assert_eq!(decode_blob(&k, BlobType::Data, e.compression, &id, mixed.len() as u32, &e.bytes).unwrap(), mixed);
        // Small blobs are always tried whole.
        assert_eq!(enc.judge(&random[..100 << 10]), Verdict::Configured);
    }

    /// Rows of a table dump keep level 3; text of random hex digits only
    /// loses by it (slower, larger), so it gets level 1. Both round trip.
    #[test]
    fn the_higher_level_is_used_only_where_it_pays() {
        let k = MasterKey::generate();
        let mut enc = BlobEncoder::new(3);
        let mut rows = String::new();
        let mut x = 1u64;
        for i in 0..12_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rows.push_str(&format!(
                "{i}\t{}\tuser{}@example.com\t2024-{:02}-{:02} 10:{:02}:00\t{{\"plan\": \"{}\"}}\n",
                x % 1000,
                x >> 40,
                x % 12 + 1,
                x % 28 + 1,
                x % 60,
                ["free", "pro", "team"][(x % 3) as usize]
            ));
        }
        let mut random = vec![0u8; 600 << 10];
        getrandom::getrandom(&mut random).unwrap();
        let hex: Vec<u8> = random.iter().map(|b| b"0123456789abcdef"[(b & 15) as usize]).collect();
        assert_eq!(enc.judge(rows.as_bytes()), Verdict::Configured);
        assert_eq!(enc.judge(&hex), Verdict::Fast);
        for data in [rows.as_bytes(), &hex[..]] {
            let id = k.blob_id(data);
            let e = enc.encode(&k, BlobType::Data, &id, data);
            assert_eq!(e.compression, Compression::Zstd);
            assert_eq!(decode_blob(&k, BlobType::Data, e.compression, &id, data.len() as u32, &e.bytes).unwrap(), data);
        }
        // A repository at level 1 never needs the second opinion.
        assert_eq!(BlobEncoder::new(1).judge(rows.as_bytes()), Verdict::Fast);
    }

    #[test]
    fn round_trip_compressible_and_random() {
        let k = MasterKey::generate();
        let mut enc = BlobEncoder::new(3);
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let id = k.blob_id(&text);
        let e = enc.encode(&k, BlobType::Data, &id, &text);
        assert_eq!(e.compression, Compression::Zstd);
        assert!(e.bytes.len() < text.len() / 4);
        assert_eq!(decode_blob(&k, BlobType::Data, e.compression, &id, text.len() as u32, &e.bytes).unwrap(), text);
        // Swapping type or id is detected.
        assert!(decode_blob(&k, BlobType::Tree, e.compression, &id, text.len() as u32, &e.bytes).is_err());
        let other = k.blob_id(b"x");
        assert!(decode_blob(&k, BlobType::Data, e.compression, &other, text.len() as u32, &e.bytes).is_err());

        let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut noise = [0u8; 4096];
        getrandom::getrandom(&mut noise).unwrap();
        for data in [&random[..], &noise[..], &[][..]] {
            let id = k.blob_id(data);
            let e = enc.encode(&k, BlobType::Tree, &id, data);
            assert_eq!(decode_blob(&k, BlobType::Tree, e.compression, &id, data.len() as u32, &e.bytes).unwrap(), data);
        }
        let id = k.blob_id(&noise);
        assert_eq!(enc.encode(&k, BlobType::Data, &id, &noise).compression, Compression::None);
    }
}
