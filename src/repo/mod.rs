//! The repository engine: a content-addressed, encrypted, deduplicating
//! store of snapshots. It knows files, streams and trees; it knows nothing
//! of databases or of Supabase. The format is specified in `docs/FORMAT.md`.

pub mod archiver;
pub mod backend;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod id;
pub mod index;
pub mod lock;
pub mod ops;
pub mod packer;
pub mod reader;
pub mod repository;
pub mod retention;
pub mod saver;
pub mod sysinfo;
#[cfg(test)]
pub mod test_support;

pub use error::{Error, Result};
pub use id::Id;
pub use repository::Repository;
