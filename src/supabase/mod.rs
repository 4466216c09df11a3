//! Backing up a Supabase project: its Postgres database and its Storage
//! objects, captured as streams and handed to the repository engine's
//! content API. Knows nothing of packs, indexes or encryption.

pub mod backup;
pub mod catalog;
pub mod copytext;
pub mod dbdump;
pub mod dbrestore;
pub mod error;
pub mod pgconn;
pub mod pgtools;
pub mod platform;
pub mod project;
pub mod restore;
pub mod restore_rules;
pub mod rowhash;
pub mod settings;
pub mod sql;
pub mod storage_api;
pub mod storage_backup;
pub mod verify;

pub use error::{SupabaseError, SupabaseResult};
