//! Replay the fuzzers' corpus (seeds and anything the fuzzers kept) through
//! every decoder: each input must be decoded or refused, never panic.

use snap::repo::format::{decode_untrusted, seed_samples, DECODERS};

#[test]
fn corpus_replays_without_panics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for decoder in DECODERS {
        let dir = root.join(decoder);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            decode_untrusted(decoder, &data);
            replayed += 1;
        }
    }
    assert!(replayed >= DECODERS.len(), "corpus is missing");
}

#[test]
fn seeds_are_accepted_by_their_decoders() {
    for (decoder, bytes) in seed_samples() {
        assert!(decode_untrusted(decoder, &bytes), "{decoder} rejects its own seed");
        // Truncations must be refused or accepted, never panic.
        for cut in 0..bytes.len().min(200) {
            decode_untrusted(decoder, &bytes[..cut]);
        }
    }
}
