//! Content-defined chunking: FastCDC (2020) over a key-derived gear table.
//!
//! The public FastCDC gear table makes cut points a function of content
//! alone, so chunk sizes seen in the stored packs would fingerprint known
//! files. Seeding by XOR-ing one word into the public table leaves the
//! table's structure known. Instead all 256 gear entries come from a BLAKE3
//! XOF keyed with the repository's chunker secret: without the key the cut
//! points are unpredictable, and with it they are stable, so deduplication
//! works across snapshots of one repository.
//!
//! A profile may instead cut only at line ends (`CutRule::Lines`), for
//! streams whose records are lines, such as COPY text where every row is
//! one line. A line past the minimum size ends a chunk when a keyed PRF of
//! its hash falls below a threshold proportional to its length, so cuts
//! are content-defined, unpredictable without the key, and a changed row
//! changes only the chunk holding it. It is also about five times cheaper
//! than the byte-wise gear hash, which was a tenth of a database backup's
//! CPU.

use std::hash::Hasher;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

/// Where a profile may cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutRule {
    /// Anywhere, where the keyed gear hash says (FastCDC).
    #[default]
    Gear,
    /// After a `\n` only, unless a line runs past the maximum size.
    Lines,
}

impl CutRule {
    fn is_gear(&self) -> bool {
        *self == CutRule::Gear
    }
}

/// The largest `k` by which a writer may scale a profile's sizes (× 4^k)
/// for one stream. Every blob costs about 160 bytes besides its data
/// (nonce and tag, pack header entry, index entry, id in the tree), so a
/// stream whose chunks compress 50-fold would store more overhead than
/// data with the profile's own sizes, and barely deduplicates better for
/// it: with 1% of pgbench's rows changed, a change lands in most of its
/// 6 KiB chunks anyway.
pub const MAX_SCALE: u8 = 3;

/// One chunk-size profile as stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    #[serde(default, skip_serializing_if = "CutRule::is_gear")]
    pub cut: CutRule,
}

impl ChunkerParams {
    /// Large files and objects: few chunks, small index.
    pub const LARGE: ChunkerParams =
        ChunkerParams { min_size: 256 * 1024, avg_size: 1024 * 1024, max_size: 4 * 1024 * 1024, cut: CutRule::Gear };
    /// Table data: small chunks, so that rows changed here and there leave
    /// most chunks of a table unchanged. On pgbench data with 1% of the
    /// rows changed (examples/table_chunking.rs, 600 MB of COPY text, all
    /// costs per blob counted), day 2 stores 18 MiB with 4 KiB chunks, 21
    /// with 8 KiB, 26 with 12 KiB and 42 (everything) with 64 KiB; day 1
    /// costs 62, 52, 48 and 42 MiB; 4 KiB chunks mean 75k blobs per 600 MB
    /// (4.6 MiB of index in memory). Changes, not first copies, are what a
    /// repository keeps paying for, day after day.
    pub const SMALL: ChunkerParams =
        ChunkerParams { min_size: 1024, avg_size: 4 * 1024, max_size: 16 * 1024, cut: CutRule::Gear };
    /// Table data (COPY text, one row a line), cut at row ends. Measured
    /// with examples/table_chunking.rs on a day of pgbench traffic (heap
    /// order, per table): day 2 adds 18.8 MiB with these sizes, against
    /// 19.0 for `SMALL` with the gear hash, from 18% fewer blobs (95k
    /// against 115k) and a 9% smaller day 1; 8 KiB lines add 20.0 MiB
    /// from 71k blobs, 4 KiB lines 18.5 MiB from 143k.
    pub const LINES: ChunkerParams =
        ChunkerParams { min_size: 1536, avg_size: 6 * 1024, max_size: 24 * 1024, cut: CutRule::Lines };

    /// These sizes multiplied by 4^`scale` (see `MAX_SCALE`); out of
    /// range where that passes FastCDC's limits.
    pub fn scaled(self, scale: u8) -> ChunkerParams {
        let factor = 1u32 << (2 * u32::from(scale.min(MAX_SCALE)));
        ChunkerParams {
            min_size: self.min_size.saturating_mul(factor),
            avg_size: self.avg_size.saturating_mul(factor),
            max_size: self.max_size.saturating_mul(factor),
            cut: self.cut,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && (self.cut == CutRule::Gear || self.min_size < self.avg_size);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker sizes {}/{}/{} are outside FastCDC's limits",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

/// Gear tables derived from the repository's chunker secret, and the key
/// of the line rule's PRF.
#[derive(Clone)]
pub struct GearTables {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    line_key: (u64, u64),
}

impl GearTables {
    pub fn derive(secret: &[u8; 32]) -> GearTables {
        let mut xof = blake3::Hasher::new_keyed(secret).update(b"gear").finalize_xof();
        let mut bytes = [0u8; 256 * 8 + 16];
        xof.fill(&mut bytes);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for i in 0..256 {
            gear[i] = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
            gear_ls[i] = gear[i] << 1;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        GearTables { gear, gear_ls, line_key: (word(256 * 8), word(256 * 8 + 8)) }
    }
}

/// A configured chunker: a profile plus the gear tables.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    tables: GearTables,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, tables: GearTables) -> Chunker {
        params.validate().expect("chunker params validated when the config was read");
        // Normalisation level 1, as the FastCDC paper recommends.
        let bits = fastcdc::v2020::logarithm2(params.avg_size);
        let mask_s = fastcdc::v2020::MASKS[(bits + 1) as usize];
        let mask_l = fastcdc::v2020::MASKS[(bits - 1) as usize];
        Chunker { params, tables, mask_s, mask_l }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`. When `data` is shorter than the
    /// maximum chunk size, the caller must either have reached end of input
    /// or refill first, since a cut point may lie beyond what it holds.
    pub fn cut(&self, data: &[u8]) -> usize {
        if self.params.cut == CutRule::Lines {
            return self.cut_lines(data);
        }
        let (_, len) = fastcdc::v2020::cut_gear(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.tables.gear,
            &self.tables.gear_ls,
        );
        len
    }

    /// The first line end at or past the minimum size whose line says
    /// "cut", else the maximum size (or all of `data`, at end of input).
    fn cut_lines(&self, data: &[u8]) -> usize {
        let (min, max) = (self.params.min_size as usize, self.params.max_size as usize);
        if data.len() <= min {
            return data.len();
        }
        let window = &data[..data.len().min(max)];
        // Lines ending before the minimum cannot cut: start from the line
        // that reaches it.
        let mut start = memchr::memrchr(b'\n', &window[..min - 1]).map_or(0, |p| p + 1);
        let avg = self.params.avg_size as usize;
        for end in memchr::memchr_iter(b'\n', &window[min - 1..]) {
            let next = min + end;
            if self.line_says_cut(&window[start..next], next >= avg) {
                return next;
            }
            start = next;
        }
        window.len()
    }

    /// Cut after `line` with probability `len / (2 (avg - min))` while the
    /// chunk is shorter than the average and `2 len / (avg - min)` from
    /// there on: FastCDC's normalisation, at line granularity. The mean
    /// chunk is then about `avg` bytes whatever the row length, and sizes
    /// bunch around it: a chunk drawn by a random changed row is then about
    /// 7.8 KiB long for the `LINES` sizes where one cut point rate would
    /// give 9.4 KiB. The PRF is keyed, so the decision cannot be predicted
    /// from the content alone; XXH3 first makes it one short SipHash per line.
    fn line_says_cut(&self, line: &[u8], past_average: bool) -> bool {
        let mut prf = SipHasher13::new_with_keys(self.tables.line_key.0, self.tables.line_key.1);
        prf.write_u64(xxhash_rust::xxh3::xxh3_64(line));
        let span = (self.params.avg_size - self.params.min_size) as u128;
        let (num, den) = if past_average { (2, 1) } else { (1, 2) };
        (u128::from(prf.finish()) * span * den) < ((line.len() as u128 * num) << 64)
    }

    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
            offset: 0,
            hints: None,
            planned_chunks: 0,
        }
    }

    /// `stream`, taking cut points from `hints` where they continue the
    /// stream's own chain of cuts: the same chunks, with less of the gear
    /// hash computed on this thread.
    pub fn stream_with_hints<R: Read>(&self, reader: R, hints: CutHints) -> ChunkStream<'_, R> {
        ChunkStream { hints: Some(hints), ..self.stream(reader) }
    }

    /// Cut `reader`, the same bytes as a stream from its offset `start`
    /// on, and send the end offsets of its chunks, in order and in small
    /// batches, until its end, a read error, `stop`, or the receiver
    /// hanging up. Run on another thread ahead of a `stream_with_hints`
    /// reader of the same bytes: a chain of cuts started anywhere soon
    /// meets the chain started at 0 (a cut depends only on the bytes from
    /// the previous cut on), and from there on the two are the same.
    pub fn plan_cuts(
        &self,
        reader: impl Read,
        start: u64,
        hints: &crossbeam_channel::Sender<Vec<u64>>,
        stop: &AtomicBool,
    ) {
        let mut stream = self.stream(reader);
        stream.offset = start;
        let mut batch = Vec::new();
        while !stop.load(AtomicOrdering::Relaxed) {
            let Ok(Some(_)) = stream.next_cut() else { break };
            batch.push(stream.offset);
            if batch.len() >= PLAN_BATCH && hints.send(std::mem::take(&mut batch)).is_err() {
                return;
            }
        }
        if !batch.is_empty() {
            let _ = hints.send(batch);
        }
    }
}

/// Cut offsets are handed over this many at a time.
const PLAN_BATCH: usize = 4;

/// Cut points planned by `Chunker::plan_cuts` on another thread.
pub struct CutHints {
    planned: crossbeam_channel::Receiver<Vec<u64>>,
    /// Planned offsets not yet passed by the reader, ascending.
    queue: std::collections::VecDeque<u64>,
    /// The last offset planned so far.
    planned_up_to: u64,
    /// Tells the planner to give up when the reader is done (or has
    /// overtaken it).
    stop: std::sync::Arc<AtomicBool>,
}

impl CutHints {
    /// Hints from a planner that starts at offset `start`.
    pub fn new(
        planned: crossbeam_channel::Receiver<Vec<u64>>,
        stop: std::sync::Arc<AtomicBool>,
        start: u64,
    ) -> CutHints {
        CutHints { planned, queue: std::collections::VecDeque::new(), planned_up_to: start, stop }
    }

    /// The planned cut after `offset`, if `offset` is itself a planned cut
    /// (the reader's chain has met the planner's). Offsets before it are
    /// dropped. A planner left far behind only duplicates the reader's
    /// work, so it is stopped.
    fn next_after(&mut self, offset: u64) -> Option<u64> {
        while let Ok(batch) = self.planned.try_recv() {
            self.queue.extend(batch);
            self.planned_up_to = self.queue.back().copied().unwrap_or(self.planned_up_to);
        }
        while self.queue.front().is_some_and(|&c| c < offset) {
            self.queue.pop_front();
        }
        if self.queue.is_empty() && self.planned_up_to + OVERTAKEN < offset {
            self.stop.store(true, AtomicOrdering::Relaxed);
        }
        match (self.queue.front(), self.queue.get(1)) {
            (Some(&here), Some(&next)) if here == offset => Some(next),
            _ => None,
        }
    }
}

/// How far the reader may run ahead of its planner before the planner is
/// stopped.
const OVERTAKEN: u64 = 16 << 20;

impl Drop for CutHints {
    fn drop(&mut self) {
        self.stop.store(true, AtomicOrdering::Relaxed);
    }
}

/// The read buffer's first size; a file this small costs no more.
const FIRST_BUFFER: usize = 64 * 1024;

/// Iterator of owned chunks read from a stream, holding at most about two
/// maximum-size chunks in memory.
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    /// `buf[pos..end]` is unconsumed input. It grows by doubling up to its
    /// working size and is then reused: truncating and regrowing it around
    /// every read zero-filled each byte before reading it (7% of a backup's
    /// CPU), and zeroing the full working size up front cost 8 MiB per file
    /// (9% of a backup of 2000 objects, most of them small).
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    hints: Option<CutHints>,
    /// Chunks cut where `hints` said.
    planned_chunks: u64,
}

impl<R: Read> ChunkStream<'_, R> {
    /// From here on, take cut points from `hints` where they continue this
    /// stream's chain (see `Chunker::stream_with_hints`).
    pub fn set_hints(&mut self, hints: CutHints) {
        self.hints = Some(hints);
    }

    /// Find the next chunk and step past it: its place in `buf` (valid
    /// until the next call), or `None` at the end of input. The cut is the
    /// planner's where it continues this stream's chain, else our own.
    fn next_cut(&mut self) -> io::Result<Option<(usize, usize)>> {
        self.fill()?;
        let rest = &self.buf[self.pos..self.end];
        if rest.is_empty() {
            return Ok(None);
        }
        let params = &self.chunker.params;
        let planned = self.hints.as_mut().and_then(|h| h.next_after(self.offset)).and_then(|next| {
            // A planner that read other bytes (the file changed) could
            // plan any length: only lengths a cut could have are taken.
            let len = usize::try_from(next - self.offset).ok()?;
            let whole = len == rest.len() && self.eof;
            ((len >= params.min_size as usize || whole) && len <= (params.max_size as usize).min(rest.len()))
                .then_some(len)
        });
        self.planned_chunks += u64::from(planned.is_some());
        let len = planned.unwrap_or_else(|| self.chunker.cut(rest));
        let start = self.pos;
        self.pos += len;
        self.offset += len as u64;
        Ok(Some((start, len)))
    }

    fn fill(&mut self) -> io::Result<()> {
        let max = self.chunker.params.max_size as usize;
        // Read in large pieces even for small chunks: fewer reads, and the
        // unconsumed tail is moved to the front once per fill, not per chunk.
        let want = (2 * max).max(1 << 20);
        if self.pos > 0 && self.end - self.pos < max {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while !self.eof && self.end - self.pos < max {
            if self.end == self.buf.len() {
                // Cannot pass `want`: with `want >= 2 max` a full buffer
                // holds at least `max` unconsumed bytes once compacted.
                let grown = (self.buf.len() * 2).clamp(FIRST_BUFFER, want);
                self.buf.resize(grown, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_cut() {
            Ok(Some((start, len))) => Some(Ok(self.buf[start..start + len].to_vec())),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// `data` in pieces of about `size` bytes, each ending at a line end
/// (the last one where `data` ends), covering it exactly: samples of a
/// line-oriented stream cut about as its chunks are, for trying out or
/// training a compression dictionary.
pub fn line_pieces(data: &[u8], size: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let end = match memchr::memchr(b'\n', &rest[size.min(rest.len() - 1)..]) {
            Some(at) => size.min(rest.len() - 1) + at + 1,
            None => rest.len(),
        };
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn small() -> ChunkerParams {
        ChunkerParams::SMALL
    }

    /// COPY-like text: numbered rows of varying length.
    fn rows(count: usize, seed: u64) -> Vec<u8> {
        let noise = pseudo_random(count, seed);
        let mut out = Vec::new();
        for (i, n) in noise.iter().enumerate() {
            out.extend_from_slice(format!("{i}\t{}\tsome text\n", "x".repeat(*n as usize % 200)).as_bytes());
        }
        out
    }

    /// Scaled line profiles keep cutting at line ends, 4^k times further
    /// apart; a gear profile scaled past FastCDC's limits is refused.
    #[test]
    fn scaled_profiles_cut_proportionally_longer_chunks() {
        let data = rows(200_000, 9);
        let mut averages = Vec::new();
        for k in 0..=2 {
            let params = ChunkerParams::LINES.scaled(k);
            assert_eq!(params.max_size, ChunkerParams::LINES.max_size << (2 * k));
            let c = Chunker::new(params, GearTables::derive(&[1; 32]));
            let chunks: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
            assert_eq!(chunks.concat(), data);
            assert!(chunks[..chunks.len() - 1]
                .iter()
                .all(|ch| ch.last() == Some(&b'\n') && ch.len() <= params.max_size as usize));
            averages.push(data.len() / chunks.len());
        }
        for pair in averages.windows(2) {
            let growth = pair[1] as f64 / pair[0] as f64;
            assert!((3.0..=5.0).contains(&growth), "{averages:?}");
        }
        assert_eq!(ChunkerParams::LINES.scaled(MAX_SCALE + 5), ChunkerParams::LINES.scaled(MAX_SCALE));
        assert!(ChunkerParams::LARGE.scaled(MAX_SCALE).validate().is_err());
        assert!(ChunkerParams::LINES.scaled(MAX_SCALE).validate().is_ok());
    }

    #[test]
    fn line_chunks_end_at_line_ends_within_bounds() {
        let data = rows(20_000, 5);
        let c = Chunker::new(ChunkerParams::LINES, GearTables::derive(&[1; 32]));
        let chunks: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
        assert_eq!(chunks.concat(), data);
        for ch in &chunks[..chunks.len() - 1] {
            assert!(ch.len() >= 1536 && ch.len() <= 24576, "{}", ch.len());
            assert_eq!(ch.last(), Some(&b'\n'));
        }
        let avg = data.len() / chunks.len();
        assert!((4500..=8500).contains(&avg), "average {avg}");
        let other: Vec<usize> = Chunker::new(ChunkerParams::LINES, GearTables::derive(&[2; 32]))
            .stream(&data[..])
            .map(|c| c.unwrap().len())
            .collect();
        assert_ne!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), other);
    }

    #[test]
    fn a_changed_row_only_changes_its_own_chunk() {
        let data = rows(20_000, 6);
        let c = Chunker::new(ChunkerParams::LINES, GearTables::derive(&[3; 32]));
        let before: std::collections::HashSet<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
        // Rows 1000 and 15000 change length; row 8000 goes.
        let text = String::from_utf8(data).unwrap();
        let mut lines: Vec<String> = text.lines().map(|l| format!("{l}\n")).collect();
        lines[1000] = "1000\tchanged\n".into();
        lines[15000].insert_str(0, "edited ");
        lines.remove(8000);
        let edited = lines.concat();
        let after: Vec<Vec<u8>> = c.stream(edited.as_bytes()).map(|c| c.unwrap()).collect();
        let new = after.iter().filter(|ch| !before.contains(*ch)).count();
        assert!(new <= 6, "{new} of {} chunks new", after.len());
    }

    #[test]
    fn lines_longer_than_the_maximum_are_cut_at_it() {
        let mut data = b"short\n".repeat(1000);
        data.extend_from_slice(&[b'y'; 100_000]);
        data.extend_from_slice(b"\nend\n");
        let c = Chunker::new(ChunkerParams::LINES, GearTables::derive(&[4; 32]));
        let chunks: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
        assert_eq!(chunks.concat(), data);
        assert!(chunks.iter().all(|ch| ch.len() <= 24576));
        assert!(chunks.iter().filter(|ch| ch.len() == 24576).count() >= 2);
    }

    #[test]
    fn chunks_concatenate_to_input_and_respect_bounds() {
        let data = pseudo_random(1 << 20, 7);
        let c = Chunker::new(small(), GearTables::derive(&[1; 32]));
        let chunks: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
        assert_eq!(chunks.concat(), data);
        for ch in &chunks[..chunks.len() - 1] {
            assert!(ch.len() >= 1024 && ch.len() <= 16384, "{}", ch.len());
        }
        let avg = data.len() / chunks.len();
        assert!((2048..=8192).contains(&avg), "average {avg}");
    }

    #[test]
    fn different_keys_cut_differently() {
        let data = pseudo_random(1 << 20, 9);
        let a: Vec<usize> =
            Chunker::new(small(), GearTables::derive(&[1; 32])).stream(&data[..]).map(|c| c.unwrap().len()).collect();
        let b: Vec<usize> =
            Chunker::new(small(), GearTables::derive(&[2; 32])).stream(&data[..]).map(|c| c.unwrap().len()).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn an_insertion_only_disturbs_nearby_chunks() {
        let data = pseudo_random(1 << 20, 11);
        let mut edited = data.clone();
        edited.splice(500_000..500_000, b"inserted bytes".iter().copied());
        let c = Chunker::new(small(), GearTables::derive(&[3; 32]));
        let a: std::collections::HashSet<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = c.stream(&edited[..]).map(|c| c.unwrap()).collect();
        let shared = b.iter().filter(|ch| a.contains(*ch)).count();
        assert!(shared + 3 >= b.len(), "{shared} of {} chunks shared", b.len());
    }

    /// Large profiles grow the read buffer through several doublings; cut
    /// points must not depend on where reads ended or the buffer grew.
    #[test]
    fn large_chunks_match_cutting_the_whole_input() {
        let data = pseudo_random(11 << 20, 13);
        let c = Chunker::new(ChunkerParams::LARGE, GearTables::derive(&[5; 32]));
        let mut expected = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let len = c.cut(&data[at..]);
            expected.push(len);
            at += len;
        }
        struct Odd<'a>(&'a [u8], usize);
        impl Read for Odd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = self.1 * 7 % 100_003 + 1;
                let n = self.1.min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let streamed: Vec<usize> = c.stream(Odd(&data, 1)).map(|c| c.unwrap().len()).collect();
        assert!(expected.len() > 4);
        assert_eq!(streamed, expected);
    }

    proptest! {
        #[test]
        fn any_input_round_trips(len in 0usize..100_000, seed in any::<u64>(), read_size in 1usize..5000) {
            let data = pseudo_random(len, seed);
            struct Trickle<'a>(&'a [u8], usize);
            impl Read for Trickle<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let n = self.1.min(buf.len()).min(self.0.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let c = Chunker::new(small(), GearTables::derive(&[4; 32]));
            let whole: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
            let trickled: Vec<Vec<u8>> = c.stream(Trickle(&data, read_size)).map(|c| c.unwrap()).collect();
            prop_assert_eq!(whole.concat(), data);
            prop_assert_eq!(whole, trickled);
        }

        /// With a planner started anywhere, the chunks are exactly one
        /// thread's; with a planner that read other bytes (a file changed
        /// under it) they still hold the input, within the size bounds.
        #[test]
        fn planned_cuts_change_nothing(len in 1usize..400_000, seed in any::<u64>(), at in 0.0f64..1.0, changed in any::<bool>()) {
            let data = pseudo_random(len, seed);
            let c = Chunker::new(small(), GearTables::derive(&[5; 32]));
            let alone: Vec<Vec<u8>> = c.stream(&data[..]).map(|c| c.unwrap()).collect();
            let start = ((len as f64 * at) as usize).min(len - 1);
            let mut planned_from = data[start..].to_vec();
            if changed {
                for b in planned_from.iter_mut().step_by(997) {
                    *b ^= 0x5a;
                }
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            c.plan_cuts(&planned_from[..], start as u64, &tx, &stop);
            let hinted: Vec<Vec<u8>> =
                c.stream_with_hints(&data[..], CutHints::new(rx, stop.clone(), start as u64)).map(|c| c.unwrap()).collect();
            prop_assert!(stop.load(AtomicOrdering::Relaxed), "the planner is told to stop when the reader is done");
            prop_assert_eq!(hinted.concat(), data);
            for ch in &hinted[..hinted.len() - 1] {
                prop_assert!(ch.len() >= 1024 && ch.len() <= 16 * 1024, "{}", ch.len());
            }
            if !changed {
                prop_assert_eq!(hinted, alone);
            }
        }
    }

    /// The reader's chain meets the planner's within a few chunks, after
    /// which every cut is the planner's.
    #[test]
    fn a_planner_takes_over_soon_after_its_start() {
        let data = pseudo_random(2_000_000, 11);
        let c = Chunker::new(small(), GearTables::derive(&[6; 32]));
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        c.plan_cuts(&data[500_000..], 500_000, &tx, &stop);
        let mut stream = c.stream_with_hints(&data[..], CutHints::new(rx, stop, 500_000));
        let mut after_start = 0;
        let mut offset = 0;
        for chunk in stream.by_ref() {
            offset += chunk.unwrap().len();
            after_start += usize::from(offset > 500_000);
        }
        assert!(after_start > 300, "{after_start}");
        assert!(stream.planned_chunks + 4 >= after_start as u64, "{} of {after_start}", stream.planned_chunks);
    }

    #[test]
    fn line_pieces_end_at_line_ends_and_cover_the_data() {
        let rows = crate::repo::test_support::vocabulary_rows(0, 300);
        for size in [1, 100, 6 << 10, 1 << 20] {
            let pieces = line_pieces(&rows, size);
            assert_eq!(pieces.concat(), rows);
            assert!(pieces.iter().all(|p| p.ends_with(b"\n")), "{size}");
            assert!(pieces[..pieces.len() - 1].iter().all(|p| p.len() > size), "{size}");
        }
        assert_eq!(line_pieces(b"no line end", 4), [b"no line end"]);
        assert!(line_pieces(b"", 4).is_empty());
    }
}
