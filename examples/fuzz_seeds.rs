//! Write the fuzzers' seed corpus: `cargo run --example fuzz_seeds`.
fn main() {
    for (name, bytes) in snap::repo::format::seed_samples() {
        let dir = std::path::Path::new("fuzz/corpus").join(name);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        let file = dir.join(format!("seed-{}", &blake3::hash(&bytes).to_hex()[..16]));
        std::fs::write(&file, &bytes).expect("write seed");
        println!("{}", file.display());
    }
}
