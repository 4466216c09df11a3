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

/// COPY rows of 40 words from a vocabulary of 300 (more than one chunk
/// of rows holds), as documents, comments or logs are: `n` rows from row
/// `from`, the same rows for the same arguments.
pub fn vocabulary_rows(from: u64, n: u64) -> Vec<u8> {
    let mut x = 0x5EED_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<String> =
        (0..300).map(|_| (0..3 + next() % 7).map(|_| char::from(b'a' + (next() % 26) as u8)).collect()).collect();
    for _ in 0..from {
        next();
    }
    let mut out = Vec::new();
    for i in from..from + n {
        let body: Vec<&str> = (0..40).map(|_| words[(next() % 300) as usize].as_str()).collect();
        let meta = format!("{{\"author\": \"user{}\", \"version\": {}}}", next() % 997, next() % 5);
        out.extend_from_slice(format!("{i}\tDocument {i}\t{}\t{meta}\n", body.join(" ")).as_bytes());
    }
    out
}
