//! Key files: the master secret wrapped under one password.
//!
//! Plain JSON, since it must be read before any key is known. The password
//! goes through Argon2id (parameters stored here, so they can be raised for
//! new keys without touching old ones) and the result seals the master secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::super::crypto::{open_with, seal_with, KdfParams, MasterKey};
use super::{malformed, FormatError};

const KEY_AD: &[u8] = b"SNAPKEY1";
/// Append-only keys seal under other associated data, so editing the flag
/// out of a key file makes it stop opening rather than grant full access.
const KEY_AD_APPEND_ONLY: &[u8] = b"SNAPKEY1:append-only";
pub const KEY_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub host: String,
    pub username: String,
    pub kdf: String,
    #[serde(flatten)]
    pub params: KdfParams,
    pub salt: String,
    pub wrapped: String,
    /// A key for a backup host: `create` works, nothing can be deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_only: bool,
}

impl KeyFile {
    pub fn create(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        host: &str,
        username: &str,
        append_only: bool,
    ) -> Result<KeyFile, String> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).expect("operating system random source failed");
        let kek = params.derive(password, &salt)?;
        let wrapped = seal_with(&kek, Self::associated(append_only), master.secret());
        Ok(KeyFile {
            version: KEY_VERSION,
            created: Utc::now(),
            host: host.to_string(),
            username: username.to_string(),
            kdf: "argon2id".to_string(),
            params,
            salt: B64.encode(salt),
            wrapped: B64.encode(wrapped),
            append_only,
        })
    }

    fn associated(append_only: bool) -> &'static [u8] {
        if append_only {
            KEY_AD_APPEND_ONLY
        } else {
            KEY_AD
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, FormatError> {
        let k: KeyFile = serde_json::from_slice(bytes).map_err(|e| malformed("key file", e.to_string()))?;
        if k.version != KEY_VERSION {
            return Err(FormatError::UnsupportedVersion(k.version));
        }
        if k.kdf != "argon2id" {
            return Err(malformed("key file", format!("unknown kdf {}", k.kdf)));
        }
        k.params.validate().map_err(|e| malformed("key file", e))?;
        let salt = B64.decode(&k.salt).map_err(|_| malformed("key file", "salt is not base64"))?;
        if !(8..=64).contains(&salt.len()) {
            return Err(malformed("key file", "salt length"));
        }
        B64.decode(&k.wrapped).map_err(|_| malformed("key file", "wrapped key is not base64"))?;
        Ok(k)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serialises")
    }

    /// `Ok(None)` when the password is not the one this file was made with.
    pub fn unwrap_key(&self, password: &[u8]) -> Result<Option<MasterKey>, FormatError> {
        let salt = B64.decode(&self.salt).map_err(|_| malformed("key file", "salt is not base64"))?;
        let wrapped = B64.decode(&self.wrapped).map_err(|_| malformed("key file", "wrapped key is not base64"))?;
        let kek = self.params.derive(password, &salt).map_err(|e| malformed("key file", e))?;
        match open_with(&kek, Self::associated(self.append_only), &wrapped) {
            Ok(secret) => {
                let secret: [u8; 32] = secret.try_into().map_err(|_| malformed("key file", "master secret length"))?;
                Ok(Some(MasterKey::from_secret(secret)))
            }
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let m = MasterKey::generate();
        let p = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let kf = KeyFile::create(&m, b"secret", p, "h", "u", false).unwrap();
        let parsed = KeyFile::decode(&kf.encode()).unwrap();
        assert_eq!(parsed.unwrap_key(b"secret").unwrap().unwrap().secret(), m.secret());
        assert!(parsed.unwrap_key(b"wrong").unwrap().is_none());
        assert!(!String::from_utf8(kf.encode()).unwrap().contains("secret\""));
        assert!(!String::from_utf8(kf.encode()).unwrap().contains("append_only"));
    }

    #[test]
    fn the_append_only_flag_cannot_be_edited_away() {
        let m = MasterKey::generate();
        let p = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
        let kf = KeyFile::create(&m, b"pw", p, "h", "u", true).unwrap();
        let parsed = KeyFile::decode(&kf.encode()).unwrap();
        assert!(parsed.append_only);
        assert_eq!(parsed.unwrap_key(b"pw").unwrap().unwrap().secret(), m.secret());
        let edited = KeyFile { append_only: false, ..parsed };
        assert!(edited.unwrap_key(b"pw").unwrap().is_none(), "a key with its flag removed must not open");
    }
}
