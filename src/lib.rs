//! snap: encrypted, deduplicating backups for Supabase projects.
//!
//! - [`repo`]: the repository engine (format, crypto, chunking, packs,
//!   index, snapshots, locks, and the operations on them).
//! - [`cli`]: argument parsing and output; thin over the engine.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod repo;
pub mod supabase;
pub mod testing;
