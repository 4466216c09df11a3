//! Snapshot manifests: one small sealed JSON file per snapshot, pointing at
//! the root tree. Everything bulky lives in deduplicated tree blobs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::crypto::MasterKey;
use super::super::id::Id;
use super::{malformed, open_file, seal_file, FormatError, SealedKind};

pub const SNAPSHOT_VERSION: u32 = 1;

/// What was backed up; also the default grouping key for retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Paths {
        paths: Vec<String>,
    },
    Stdin {
        name: String,
    },
    Command {
        name: String,
        command: Vec<String>,
    },
    /// A whole application (e.g. a Supabase project) identified by a URL
    /// with no credentials in it.
    Project {
        url: String,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Paths { paths } => paths.join(" "),
            Source::Stdin { name } => format!("stdin:{name}"),
            Source::Command { name, .. } => format!("command:{name}"),
            Source::Project { url } => url.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    /// Bytes written to the repository by this snapshot (packs and index).
    pub bytes_added: u64,
    pub chunks_total: u64,
    pub chunks_new: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<Utc>,
    pub host: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub source: Source,
    pub tree: Id,
    pub summary: Summary,
    /// Application manifest (e.g. database versions, table row counts).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
    /// Paths whose data was found missing or damaged and dropped by
    /// `repair snapshots`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<String>,
    /// The snapshot this one was rewritten from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<Id>,
}

impl Snapshot {
    pub fn decode_plain(plain: &[u8]) -> Result<Snapshot, FormatError> {
        let s: Snapshot = serde_json::from_slice(plain).map_err(|e| malformed("snapshot", e.to_string()))?;
        if s.version != SNAPSHOT_VERSION {
            return Err(FormatError::UnsupportedVersion(s.version));
        }
        Ok(s)
    }
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        seal_file(key, SealedKind::Snapshot, &serde_json::to_vec(self).expect("snapshot serialises"))
    }
    pub fn open(key: &MasterKey, bytes: &[u8]) -> Result<Snapshot, FormatError> {
        Self::decode_plain(&open_file(key, SealedKind::Snapshot, bytes)?)
    }
}
