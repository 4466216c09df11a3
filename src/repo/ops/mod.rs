//! One module per operation; each takes an opened repository and options,
//! and returns a report for the CLI to render.

pub mod check;
pub mod copy;
pub mod create;
pub mod diff;
mod file_writer;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod walk;
