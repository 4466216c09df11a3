//! Test support shipped with the project: a faithful Storage API server
//! for tests and the quickstart demo project (`snap-storage-server`).

pub mod s3_server;
pub mod storage_server;
