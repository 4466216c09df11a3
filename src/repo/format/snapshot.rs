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
    /// Set by `copy`: the repository and snapshot this one is a copy of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopiedFrom>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFrom {
    /// The source repository's config id.
    pub repository: Id,
    pub snapshot: Id,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn arb_source() -> impl Strategy<Value = Source> {
        prop_oneof![
            proptest::collection::vec(".{0,20}", 0..4).prop_map(|paths| Source::Paths { paths }),
            ".{0,20}".prop_map(|name| Source::Stdin { name }),
            (".{0,10}", proptest::collection::vec(".{0,10}", 0..3))
                .prop_map(|(name, command)| Source::Command { name, command }),
            ".{0,30}".prop_map(|url| Source::Project { url }),
        ]
    }

    prop_compose! {
        fn arb_snapshot()(
            secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000,
            host in ".{0,16}", username in ".{0,16}",
            tags in proptest::collection::vec("[a-z0-9-]{1,8}", 0..4),
            source in arb_source(), tree in any::<[u8; 32]>(),
            counts in any::<[u32; 6]>(), duration in 0.0f64..1e6,
            rows in proptest::option::of(any::<u32>()),
            lost in proptest::collection::vec(".{0,12}", 0..3),
            original in proptest::option::of(any::<[u8; 32]>()),
            copied in proptest::option::of(any::<([u8; 32], [u8; 32])>()),
        ) -> Snapshot {
            Snapshot {
                version: SNAPSHOT_VERSION,
                time: Utc.timestamp_opt(secs, nanos).unwrap(),
                host, username, tags, source, tree: Id(tree),
                summary: Summary {
                    files: counts[0] as u64, dirs: counts[1] as u64, bytes_read: counts[2] as u64,
                    bytes_added: counts[3] as u64, chunks_total: counts[4] as u64, chunks_new: counts[5] as u64,
                    duration_s: duration,
                },
                extra: rows.map(|r| serde_json::json!({"tables": {"public.t": {"rows": r}}})).unwrap_or_default(),
                lost, original: original.map(Id),
                copied_from: copied.map(|(r, s)| CopiedFrom { repository: Id(r), snapshot: Id(s) }),
            }
        }
    }

    proptest! {
        #[test]
        fn snapshot_round_trip(s in arb_snapshot()) {
            let key = MasterKey::generate();
            let sealed = s.seal(&key);
            prop_assert_eq!(Snapshot::open(&key, &sealed).unwrap(), s.clone());
            // Another key, or any flipped byte, is refused.
            prop_assert!(Snapshot::open(&MasterKey::generate(), &sealed).is_err());
            let mut bad = sealed.clone();
            let i = sealed.len() / 2;
            bad[i] ^= 1;
            prop_assert!(Snapshot::open(&key, &bad).is_err());
        }

        #[test]
        fn snapshot_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode_plain(&bytes);
        }
    }
}
