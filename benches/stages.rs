//! Per-stage throughput of the create and restore pipelines.
//! Run: `cargo bench --bench stages`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use snap::repo::archiver::{SnapshotMeta, SnapshotWriter};
use snap::repo::backend::MemoryBackend;
use snap::repo::chunker::{line_pieces, Chunker, ChunkerParams, GearTables};
use snap::repo::crypto::{KdfParams, MasterKey};
use snap::repo::format::blob::{
    decode_blob, BlobEncoder, BlobType, DecoderDictionary, Dictionaries, Dictionary, NoDictionaries,
};
use snap::repo::format::index::{IndexBlob, IndexFile, IndexPack};
use snap::repo::format::snapshot::Source;
use snap::repo::format::tree::{Node, NodeKind};
use snap::repo::index::MasterIndex;
use snap::repo::repository::{InitOptions, Repository};
use snap::repo::saver::Progress;
use snap::repo::Id;

/// Text that compresses like a SQL dump, mixed with random bytes.
fn sample(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut row = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        row += 1;
        out.extend_from_slice(
            format!("{row}\tuser{}\t{}\t2026-11-{:02}\t{{\"k\": {}}}\n", x % 9973, x, x % 28 + 1, x % 1000).as_bytes(),
        );
    }
    out.truncate(len);
    out
}

fn stages(c: &mut Criterion) {
    let key = MasterKey::from_secret([1; 32]);
    let data = sample(64 << 20);
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));

    for (name, params) in [("chunk_large", ChunkerParams::LARGE), ("chunk_small", ChunkerParams::SMALL)] {
        let chunker = Chunker::new(params, GearTables::derive(key.chunker_secret()));
        g.bench_function(name, |b| b.iter(|| chunker.stream(&data[..]).map(|c| c.unwrap().len()).sum::<usize>()));
    }
    let chunks: Vec<Vec<u8>> = Chunker::new(ChunkerParams::LARGE, GearTables::derive(key.chunker_secret()))
        .stream(&data[..])
        .map(|c| c.unwrap())
        .collect();
    g.bench_function("hash_keyed_blake3", |b| {
        b.iter(|| chunks.iter().map(|c| key.blob_id(c).0[0] as u64).sum::<u64>())
    });
    for level in [1, 3] {
        g.bench_function(format!("compress_seal_zstd{level}"), |b| {
            let mut enc = BlobEncoder::new(level);
            b.iter(|| {
                chunks
                    .iter()
                    .map(|c| enc.encode(&key, BlobType::Data, &Id([0; 32]), c, None).bytes.len())
                    .sum::<usize>()
            })
        });
    }
    let mut enc = BlobEncoder::new(3);
    let encoded: Vec<_> = chunks
        .iter()
        .map(|c| {
            let id = key.blob_id(c);
            (id, c.len() as u32, enc.encode(&key, BlobType::Data, &id, c, None))
        })
        .collect();
    g.bench_function("open_decompress_verify", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|(id, len, e)| {
                    decode_blob(&key, BlobType::Data, e.compression, id, *len, &e.bytes, &NoDictionaries).unwrap().len()
                })
                .sum::<usize>()
        })
    });

    g.bench_function("ingest_pipeline_memory_backend", |b| {
        b.iter_batched(
            || {
                let backend = Arc::new(MemoryBackend::new());
                let opts = InitOptions {
                    kdf: KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 },
                    pack_size: 16 << 20,
                    compression_level: 3,
                };
                Arc::new(Repository::init(backend, b"pw", &opts).unwrap())
            },
            |repo| {
                let mut w = SnapshotWriter::new(repo, Arc::new(Progress::default())).unwrap();
                w.add_file(vec![b"dump.sql".to_vec()], Node::new(b"dump.sql", NodeKind::File), &data[..], "default")
                    .unwrap();
                w.finish(SnapshotMeta {
                    time: None,
                    host: None,
                    tags: vec![],
                    source: Source::Stdin { name: "dump.sql".into() },
                    extra: serde_json::Value::Null,
                })
                .unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    table_rows(c, &key);

    // Index: lookups in a million-entry table.
    let mut idx = MasterIndex::new();
    let mut file = IndexFile::default();
    let ids: Vec<Id> = (0..1_000_000u32).map(|i| Id(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
    for (p, chunk) in ids.chunks(1000).enumerate() {
        file.packs.push(IndexPack {
            id: Id(*blake3::hash(&(p as u64).to_le_bytes()).as_bytes()),
            blobs: chunk
                .iter()
                .map(|id| IndexBlob {
                    blob_type: BlobType::Data,
                    compression: snap::repo::format::blob::Compression::Zstd,
                    id: *id,
                    offset: 0,
                    length: 1,
                    raw_length: 1,
                })
                .collect(),
        });
    }
    idx.load_file(&file);
    idx.seal_loaded();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("lookup_1m_entries", |b| b.iter(|| ids.iter().step_by(100).filter(|id| idx.contains(id)).count()));
    g.finish();
}

/// Table rows in 6 KiB chunks, each compressed alone, without and with a
/// dictionary trained on the stream's first 768 KiB (docs/FORMAT.md §8),
/// and opened again.
fn table_rows(c: &mut Criterion, key: &MasterKey) {
    let rows = sample(8 << 20);
    let chunks = line_pieces(&rows, 6 << 10);
    let training = &rows[..768 << 10];
    let sizes: Vec<usize> = line_pieces(training, 6 << 10).iter().map(|p| p.len()).collect();
    let trained = zstd::dict::from_continuous(training, &sizes, 64 << 10).unwrap();
    let dict_id = key.blob_id(&trained);
    let dictionary = Dictionary::new(dict_id, &trained, 3).unwrap();
    let decoder = Arc::new(DecoderDictionary::new(&trained).unwrap());
    struct One(Id, Arc<DecoderDictionary>);
    impl Dictionaries for One {
        fn decoder(&self, id: &Id) -> Result<Arc<DecoderDictionary>, String> {
            (*id == self.0).then(|| self.1.clone()).ok_or_else(|| "unknown".to_string())
        }
    }
    let found = One(dict_id, decoder);
    let mut g = c.benchmark_group("table_rows_6k");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(rows.len() as u64));
    for (name, d) in [("compress_seal", None), ("compress_seal_dictionary", Some(&dictionary))] {
        g.bench_function(name, |b| {
            let mut enc = BlobEncoder::new(3);
            b.iter(|| {
                chunks.iter().map(|c| enc.encode(key, BlobType::Data, &Id([0; 32]), c, d).bytes.len()).sum::<usize>()
            })
        });
    }
    let mut enc = BlobEncoder::new(3);
    let sealed: Vec<_> = chunks
        .iter()
        .map(|c| {
            (key.blob_id(c), c.len() as u32, enc.encode(key, BlobType::Data, &key.blob_id(c), c, Some(&dictionary)))
        })
        .collect();
    g.bench_function("open_decompress_verify_dictionary", |b| {
        b.iter(|| {
            sealed
                .iter()
                .map(|(id, len, e)| {
                    decode_blob(key, BlobType::Data, e.compression, id, *len, &e.bytes, &found).unwrap().len()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
