//! Every byte layout snap writes, and nothing else: this folder is the code
//! twin of `docs/FORMAT.md`, section by section. Decoders here take untrusted
//! bytes and must fail with an error, never panic or allocate without bound
//! (each is a fuzz target).

pub mod blob;
mod untrusted;
pub use untrusted::{decode_untrusted, seed_samples, DECODERS};
pub mod config;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

use super::crypto::{CryptoError, MasterKey};

/// First bytes of every sealed repository file (config, index, snapshot,
/// lock, and each pack's header).
pub const MAGIC: &[u8; 4] = b"SNAP";
/// Version of the sealed-file envelope and of the formats inside it.
pub const FORMAT_VERSION: u8 = 1;
const ENVELOPE_HEADER_LEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SealedKind {
    Config = 1,
    PackHeader = 2,
    Index = 3,
    Snapshot = 4,
    Lock = 5,
}

impl SealedKind {
    fn name(self) -> &'static str {
        match self {
            SealedKind::Config => "config",
            SealedKind::PackHeader => "pack header",
            SealedKind::Index => "index",
            SealedKind::Snapshot => "snapshot",
            SealedKind::Lock => "lock",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a snap file (bad magic bytes)")]
    BadMagic,
    #[error("expected a {expected} file but found kind {found}")]
    WrongKind { expected: &'static str, found: u8 },
    #[error("format version {0} is newer than this snap understands; upgrade snap")]
    UnsupportedVersion(u32),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> FormatError {
    FormatError::Malformed { what, detail: detail.into() }
}

/// `MAGIC | kind | version | nonce | ciphertext | tag`; the 6-byte header is
/// the associated data, so kind and version cannot be swapped unnoticed.
pub fn seal_file(key: &MasterKey, kind: SealedKind, plaintext: &[u8]) -> Vec<u8> {
    let header = envelope_header(kind);
    let sealed = key.seal(&header, plaintext);
    let mut out = Vec::with_capacity(header.len() + sealed.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&sealed);
    out
}

pub fn open_file(key: &MasterKey, kind: SealedKind, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    if bytes.len() < ENVELOPE_HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes[4] != kind as u8 {
        return Err(FormatError::WrongKind { expected: kind.name(), found: bytes[4] });
    }
    if bytes[5] != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion(bytes[5] as u32));
    }
    Ok(key.open(&bytes[..ENVELOPE_HEADER_LEN], &bytes[ENVELOPE_HEADER_LEN..])?)
}

fn envelope_header(kind: SealedKind) -> [u8; ENVELOPE_HEADER_LEN] {
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], kind as u8, FORMAT_VERSION]
}

/// Little-endian reader over untrusted bytes.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        Cursor { data, what }
    }
    pub fn remaining(&self) -> usize {
        self.data.len()
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.data.len() < n {
            return Err(malformed(self.what, "truncated"));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn id(&mut self) -> Result<super::id::Id, FormatError> {
        Ok(super::id::Id::from_slice(self.take(32)?).unwrap())
    }
    /// A count of records of `record_len` bytes each, checked against what
    /// is left so that a forged count cannot trigger a huge allocation.
    pub fn count(&mut self, record_len: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(record_len) > self.remaining() {
            return Err(malformed(self.what, format!("count {n} exceeds the data")));
        }
        Ok(n)
    }
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.what, format!("{} trailing bytes", self.data.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_binds_kind_and_version() {
        let k = MasterKey::generate();
        let f = seal_file(&k, SealedKind::Index, b"data");
        assert_eq!(open_file(&k, SealedKind::Index, &f).unwrap(), b"data");
        assert!(matches!(open_file(&k, SealedKind::Snapshot, &f), Err(FormatError::WrongKind { .. })));
        let mut g = f.clone();
        g[4] = SealedKind::Snapshot as u8;
        assert!(matches!(open_file(&k, SealedKind::Snapshot, &g), Err(FormatError::Crypto(_))));
        let mut v = f.clone();
        v[5] = 9;
        assert_eq!(open_file(&k, SealedKind::Index, &v), Err(FormatError::UnsupportedVersion(9)));
        assert_eq!(open_file(&k, SealedKind::Index, b"xx"), Err(FormatError::BadMagic));
    }
}
