//! What chunk size and cut rule suit table data? For two snapshots of the
//! same table streams (day 1, and day 2 after some rows changed), print for
//! each chunk size, cut rule (FastCDC's gear hash, or snap's line rule that
//! cuts at row ends) and zstd level: the stored size of day 1, the bytes
//! day 2 adds after deduplication, the number of blobs (index memory), and
//! the CPU time of chunk + hash + compress on one core.
//!
//!     cargo run --release --example table_chunking -- DAY1 DAY2 [AVG_KIB...]
//!
//! (scripts/bench-peers makes such streams; any two files will do.)

use std::collections::HashSet;
use std::time::Instant;

/// Repository bytes per stored blob besides its compressed data: nonce and
/// tag (40), its pack header entry (42) and its index entry (46).
const PER_BLOB: usize = 128;

use snap::repo::chunker::{Chunker, ChunkerParams, CutRule, GearTables};

fn chunks(data: &[u8], avg: u32, cut: CutRule) -> Vec<Vec<u8>> {
    let params = ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg * 4, cut };
    Chunker::new(params, GearTables::derive(&[7; 32])).stream(data).map(|c| c.expect("in memory")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: table_chunking DAY1 DAY2 [AVG_KIB...]");
        std::process::exit(2);
    }
    let day1 = std::fs::read(&args[0]).expect("day 1 file");
    let day2 = std::fs::read(&args[1]).expect("day 2 file");
    let sizes: Vec<u32> = if args.len() > 2 {
        args[2..].iter().map(|a| a.parse().expect("KiB")).collect()
    } else {
        vec![4, 8, 16, 64, 1024]
    };
    println!("| avg chunk | cut | zstd | day 1 stored MiB | day 2 adds MiB | day 1 blobs | index MiB at 64 B/blob | CPU s (day 1, one core) |");
    println!("|---|---|---|---|---|---|---|---|");
    for (avg_kib, cut, level) in sizes
        .iter()
        .flat_map(|a| [CutRule::Gear, CutRule::Lines].map(|c| (*a, c)))
        .flat_map(|(a, c)| [1, 3].map(|l| (a, c, l)))
    {
        {
            let started = Instant::now();
            let mut seen = HashSet::new();
            let mut compressor = zstd::bulk::Compressor::new(level).expect("level");
            let mut stored1 = 0usize;
            let c1 = chunks(&day1, avg_kib * 1024, cut);
            for c in &c1 {
                if seen.insert(*blake3::hash(c).as_bytes()) {
                    stored1 += compressor.compress(c).expect("compress").len().min(c.len()) + PER_BLOB;
                }
            }
            let cpu = started.elapsed().as_secs_f64();
            let mut added = 0usize;
            for c in chunks(&day2, avg_kib * 1024, cut) {
                if seen.insert(*blake3::hash(&c).as_bytes()) {
                    added += compressor.compress(&c).expect("compress").len().min(c.len()) + PER_BLOB;
                }
            }
            let mib = |b: usize| b as f64 / 1048576.0;
            println!(
                "| {avg_kib} KiB | {cut:?} | {level} | {:.1} | {:.1} | {} | {:.1} | {:.2} |",
                mib(stored1),
                mib(added),
                c1.len(),
                mib(c1.len() * 64),
                cpu
            );
        }
    }
}
