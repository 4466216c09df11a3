//! Entry points for fuzzing: every decoder of untrusted bytes by name, and
//! valid samples of each to seed the fuzzers.

/// The decoders of untrusted repository bytes, by name: the fuzz targets and
/// the corpus replay test call through here so both exercise the same code.
pub const DECODERS: [&str; 7] = ["key_file", "config", "pack_header", "index", "snapshot", "tree", "lock"];

/// Run the named decoder on `data`; returns whether it accepted the input.
pub fn decode_untrusted(decoder: &str, data: &[u8]) -> bool {
    match decoder {
        "key_file" => super::key::KeyFile::decode(data).is_ok(),
        "config" => super::config::Config::decode_plain(data).is_ok(),
        "pack_header" => super::pack::decode_header(data, None).is_ok(),
        "index" => super::index::IndexFile::decode_plain(data).is_ok(),
        "snapshot" => super::snapshot::Snapshot::decode_plain(data).is_ok(),
        "tree" => super::tree::Tree::decode(data).is_ok(),
        "lock" => super::lock::LockInfo::decode_plain(data).is_ok(),
        other => panic!("unknown decoder {other}"),
    }
}

/// Valid sample inputs for each decoder: the fuzzers' seed corpus.
pub fn seed_samples() -> Vec<(&'static str, Vec<u8>)> {
    use super::super::crypto::{KdfParams, MasterKey};
    let key = MasterKey::from_secret([7; 32]);
    let kf = super::key::KeyFile::create(
        &key,
        b"pw",
        KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 },
        "host",
        "user",
        false,
    )
    .expect("cheap kdf works");
    let cfg = super::config::Config::new(super::config::DEFAULT_PACK_SIZE, 3);
    let entries = [
        super::pack::PackEntry {
            blob_type: super::blob::BlobType::Data,
            compression: super::blob::Compression::Zstd,
            id: super::super::id::Id([1; 32]),
            length: 100,
            raw_length: 300,
        },
        super::pack::PackEntry {
            blob_type: super::blob::BlobType::Tree,
            compression: super::blob::Compression::None,
            id: super::super::id::Id([2; 32]),
            length: 50,
            raw_length: 10,
        },
    ];
    let idx = super::index::IndexFile {
        supersedes: vec![super::super::id::Id([3; 32])],
        packs: vec![super::index::IndexPack {
            id: super::super::id::Id([4; 32]),
            blobs: vec![super::index::IndexBlob {
                blob_type: super::blob::BlobType::Data,
                compression: super::blob::Compression::Zstd,
                id: super::super::id::Id([5; 32]),
                offset: 0,
                length: 77,
                raw_length: 99,
            }],
        }],
    };
    let mut file = super::tree::Node::new(b"file.txt", super::tree::NodeKind::File);
    file.content = vec![super::super::id::Id([6; 32])];
    file.size = 12;
    let mut dir = super::tree::Node::new(b"sub", super::tree::NodeKind::Dir);
    dir.subtree = Some(super::super::id::Id([8; 32]));
    let mut link = super::tree::Node::new(b"\xffraw", super::tree::NodeKind::Symlink);
    link.target = Some("file.txt".into());
    let mut t = super::tree::Tree { nodes: vec![file, dir, link] };
    t.sort();
    let snap = super::snapshot::Snapshot {
        version: super::snapshot::SNAPSHOT_VERSION,
        time: chrono::Utc::now(),
        host: "h".into(),
        username: "u".into(),
        tags: vec!["t".into()],
        source: super::snapshot::Source::Paths { paths: vec!["/x".into()] },
        tree: super::super::id::Id([9; 32]),
        summary: super::snapshot::Summary::default(),
        extra: serde_json::json!({"k": [1, 2]}),
        lost: vec![],
        original: None,
        copied_from: None,
    };
    let lock = super::lock::LockInfo {
        host: "h".into(),
        pid: 1,
        username: "u".into(),
        time: chrono::Utc::now(),
        exclusive: true,
        purpose: "prune".into(),
        scope: Some("create:example".into()),
    };
    vec![
        ("key_file", kf.encode()),
        ("config", serde_json::to_vec(&cfg).expect("serialises")),
        ("pack_header", super::pack::encode_header(&entries)),
        ("index", idx.encode_plain()),
        ("snapshot", serde_json::to_vec(&snap).expect("serialises")),
        ("tree", t.encode()),
        ("lock", serde_json::to_vec(&lock).expect("serialises")),
    ]
}
