//! Lock files: who holds the repository, shared or exclusive, since when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::crypto::MasterKey;
use super::{malformed, open_file, seal_file, FormatError, SealedKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub username: String,
    /// When this lock file was written: a holder rewrites its lock
    /// periodically, so an old time means the holder is gone.
    pub time: DateTime<Utc>,
    pub exclusive: bool,
    /// The command holding it, for the message shown to whoever waits.
    pub purpose: String,
    /// Two locks with the same scope never coexist, even shared ones: two
    /// backups of the same source must not race.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl LockInfo {
    pub fn decode_plain(plain: &[u8]) -> Result<LockInfo, FormatError> {
        serde_json::from_slice(plain).map_err(|e| malformed("lock", e.to_string()))
    }
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        seal_file(key, SealedKind::Lock, &serde_json::to_vec(self).expect("lock serialises"))
    }
    pub fn open(key: &MasterKey, bytes: &[u8]) -> Result<LockInfo, FormatError> {
        Self::decode_plain(&open_file(key, SealedKind::Lock, bytes)?)
    }
}
