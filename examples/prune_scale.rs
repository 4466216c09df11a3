//! Build a repository with many small blobs, for measuring `snap prune` at
//! scale (`scripts/bench-prune` runs it, then times the real binary).
//!
//! `prune_scale DIR BLOBS`: two snapshots; the older references every blob
//! (1000 per file), the newer every other file. Forgetting the older one
//! leaves half of every pack unused, the worst case for prune: every pack
//! is repacked. The password is `SNAP_PASSWORD`.

use std::sync::Arc;

use snap::repo::backend::LocalBackend;
use snap::repo::crypto::KdfParams;
use snap::repo::format::snapshot::{Snapshot, Source, Summary, SNAPSHOT_VERSION};
use snap::repo::format::tree::{Node, NodeKind, Tree};
use snap::repo::repository::InitOptions;
use snap::repo::saver::{BlobSaver, Progress};
use snap::repo::{format::blob::BlobType, Id, Repository};

const PER_FILE: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2)) else {
        return Err("usage: prune_scale DIR BLOBS".into());
    };
    let count: usize = count.parse()?;
    let password = std::env::var("SNAP_PASSWORD").map_err(|_| "set SNAP_PASSWORD")?;
    let repo = Arc::new(Repository::init(
        Arc::new(LocalBackend::new(dir)),
        password.as_bytes(),
        &InitOptions {
            kdf: KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 },
            pack_size: 16 * 1024 * 1024,
            compression_level: 1,
        },
    )?);
    repo.load_index()?;
    let saver = BlobSaver::new(repo.clone(), Arc::new(Progress::default()), 2);
    let mut files = Vec::new();
    let mut blob = [0u8; 128];
    for f in 0..count.div_ceil(PER_FILE) {
        let mut batch = Vec::with_capacity(PER_FILE);
        for b in 0..PER_FILE.min(count - f * PER_FILE) {
            // Unique, incompressible-looking bytes per blob.
            let seed = blake3::hash(&((f * PER_FILE + b) as u64).to_le_bytes());
            for (i, chunk) in blob.chunks_mut(32).enumerate() {
                chunk.copy_from_slice(blake3::keyed_hash(seed.as_bytes(), &[i as u8]).as_bytes());
            }
            batch.push(blob.to_vec());
        }
        let saved = saver.submit(batch, BlobType::Data)?.recv().expect("saver replies")?;
        let mut node = Node::new(format!("f{f:07}").as_bytes(), NodeKind::File);
        node.content = saved.iter().map(|s| s.id).collect();
        node.size = (node.content.len() * blob.len()) as u64;
        node.mode = 0o644;
        files.push(node);
    }
    let all = saver.save_tree(Tree { nodes: files.clone() }.encode())?;
    let half = saver.save_tree(Tree { nodes: files.into_iter().step_by(2).collect() }.encode())?;
    saver.finish()?;
    for (day, tree) in [(1, all), (2, half)] {
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time: format!("2026-10-0{day}T12:00:00Z").parse()?,
            host: "bench".into(),
            username: "bench".into(),
            tags: Vec::new(),
            source: Source::Paths { paths: vec!["/bench".into()] },
            tree,
            summary: Summary::default(),
            extra: serde_json::Value::Null,
            lost: Vec::new(),
            original: None,
            copied_from: None,
        };
        let id: Id = repo.write_snapshot(&snapshot)?;
        println!("snapshot {} day {day}", id.to_hex());
    }
    Ok(())
}
