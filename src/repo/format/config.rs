//! The repository config: parameters every writer must share.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::chunker::ChunkerParams;
use super::super::crypto::MasterKey;
use super::super::id::Id;
use super::{malformed, open_file, seal_file, FormatError, SealedKind};

pub const CONFIG_VERSION: u32 = 1;
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
/// Chunker profile used when a caller names none.
pub const PROFILE_DEFAULT: &str = "default";
/// Smaller chunks for dumps and other record streams.
pub const PROFILE_SMALL: &str = "small";
/// Small chunks cut at line ends, for table data (one row a line).
/// Repositories made before it existed lack it; writers fall back to `small`.
pub const PROFILE_LINES: &str = "lines";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// Random id, so caches and copies can tell repositories apart.
    pub id: Id,
    pub created: DateTime<Utc>,
    pub chunker: BTreeMap<String, ChunkerParams>,
    pub compression_level: i32,
    pub pack_size: u32,
    /// Saved retention policy, so a scheduled prune needs no flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<serde_json::Value>,
}

impl Config {
    pub fn new(pack_size: u32, compression_level: i32) -> Config {
        let mut chunker = BTreeMap::new();
        chunker.insert(PROFILE_DEFAULT.to_string(), ChunkerParams::LARGE);
        chunker.insert(PROFILE_SMALL.to_string(), ChunkerParams::SMALL);
        chunker.insert(PROFILE_LINES.to_string(), ChunkerParams::LINES);
        Config {
            version: CONFIG_VERSION,
            id: Id::random(),
            created: Utc::now(),
            chunker,
            compression_level,
            pack_size,
            retention: None,
        }
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.version != CONFIG_VERSION {
            return Err(FormatError::UnsupportedVersion(self.version));
        }
        if !self.chunker.contains_key(PROFILE_DEFAULT) {
            return Err(malformed("config", "no default chunker profile"));
        }
        for (name, p) in &self.chunker {
            p.validate().map_err(|e| malformed("config", format!("profile {name}: {e}")))?;
        }
        if !(1..=22).contains(&self.compression_level) {
            return Err(malformed("config", format!("compression level {}", self.compression_level)));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.pack_size) {
            return Err(malformed("config", format!("pack size {}", self.pack_size)));
        }
        Ok(())
    }

    pub fn decode_plain(plain: &[u8]) -> Result<Config, FormatError> {
        let config: Config = serde_json::from_slice(plain).map_err(|e| malformed("config", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        seal_file(key, SealedKind::Config, &serde_json::to_vec_pretty(self).expect("config serialises"))
    }

    pub fn open(key: &MasterKey, bytes: &[u8]) -> Result<Config, FormatError> {
        Self::decode_plain(&open_file(key, SealedKind::Config, bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let k = MasterKey::generate();
        let c = Config::new(DEFAULT_PACK_SIZE, 3);
        assert_eq!(Config::open(&k, &c.seal(&k)).unwrap(), c);
        let mut bad = c.clone();
        bad.compression_level = 40;
        assert!(Config::decode_plain(&serde_json::to_vec(&bad).unwrap()).is_err());
        assert!(Config::decode_plain(b"{}").is_err());
    }
}
