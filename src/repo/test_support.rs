//! Helpers for the engine's unit tests.

use std::sync::Arc;

use super::archiver::{Content, SnapshotMeta, SnapshotWriter};
use super::backend::{Backend, MemoryBackend};
use super::crypto::KdfParams;
use super::format::snapshot::Source;
use super::format::tree::{Node, NodeKind};
use super::ops::walk;
use super::repository::{InitOptions, Repository};
use super::saver::Progress;

/// A new repository on `backend` with a cheap key derivation.
pub fn test_repo(backend: Arc<dyn Backend>) -> Arc<Repository> {
    let kdf = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
    let opts = InitOptions { kdf, pack_size: 4 << 20, compression_level: 1 };
    Arc::new(Repository::init(backend, b"pw", &opts).unwrap())
}

/// A new repository in memory.
pub fn memory_repo() -> Arc<Repository> {
    test_repo(Arc::new(MemoryBackend::new()))
}

/// A snapshot of one file `f`, its contents saved by `save`; its node.
pub fn store_file_with(repo: &Arc<Repository>, save: impl FnOnce(&SnapshotWriter) -> Content) -> Node {
    let mut w = SnapshotWriter::new(repo.clone(), Arc::new(Progress::default())).unwrap();
    let content = save(&w);
    w.add_content(vec![b"f".to_vec()], Node::new(b"f", NodeKind::File), content).unwrap();
    let meta = SnapshotMeta {
        time: None,
        host: None,
        tags: vec![],
        source: Source::Stdin { name: "f".into() },
        extra: serde_json::Value::Null,
    };
    let (_, snap) = w.finish(meta).unwrap();
    walk::find_node(repo, &snap.tree, &[b"f".to_vec()]).unwrap().unwrap()
}
