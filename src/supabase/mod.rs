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
pub mod preflight;
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

/// The small async runtime the Supabase side runs its I/O on; the engine's
/// own threads do the CPU work.
pub fn runtime() -> SupabaseResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SupabaseError::Config(format!("cannot start the async runtime: {e}")))
}

/// A runtime that only the calling thread drives, for connections whose
/// messages that thread also consumes (COPY streams): no hand-over between
/// threads and no wake-up per read.
pub fn current_thread_runtime() -> SupabaseResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SupabaseError::Config(format!("cannot start the async runtime: {e}")))
}
