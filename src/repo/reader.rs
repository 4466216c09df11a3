//! Reading many blobs in order, with decryption and decompression spread
//! over worker threads. Blobs that sit back to back in one pack (the common
//! case: a file's chunks are written in order) are fetched with one ranged
//! read, so restore reads packs sequentially instead of blob by blob, which
//! matters most on object storage. Results come back in input order through
//! a window of bounded size, so memory stays at a few runs however long the
//! file.

use std::collections::BTreeMap;

use crossbeam_channel::bounded;

use super::error::{Error, Result};
use super::id::Id;
use super::index::BlobLocation;
use super::repository::Repository;

/// Upper bounds of one coalesced read. Small enough that several runs are in
/// flight at once for parallel decryption, large enough to cut request counts.
const RUN_MAX_BLOBS: usize = 8;
const RUN_MAX_BYTES: u64 = 4 << 20;

/// Split `ids` into runs of blobs contiguous in one pack. Each run is a list
/// of (position in `ids`, id, location).
fn next_run(repo: &Repository, ids: &[Id], start: usize) -> Result<Vec<(usize, Id, BlobLocation)>> {
    let index = repo.index();
    let locate = |i: usize| index.get(&ids[i]).ok_or(Error::MissingBlob(ids[i]));
    let first = locate(start)?;
    let mut run = vec![(start, ids[start], first)];
    let mut bytes = first.length as u64;
    let mut i = start + 1;
    while i < ids.len() && run.len() < RUN_MAX_BLOBS {
        let Some(loc) = index.get(&ids[i]) else { break };
        let prev = run[run.len() - 1].2;
        let contiguous = loc.pack == prev.pack && loc.offset as u64 == prev.offset as u64 + prev.length as u64;
        if !contiguous || bytes + loc.length as u64 > RUN_MAX_BYTES {
            break;
        }
        bytes += loc.length as u64;
        run.push((i, ids[i], loc));
        i += 1;
    }
    Ok(run)
}

pub fn for_each_blob_ordered(
    repo: &Repository,
    ids: &[Id],
    threads: usize,
    mut sink: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<()> {
    if ids.len() <= 1 {
        for id in ids {
            sink(repo.read_blob(id)?)?;
        }
        return Ok(());
    }
    let threads = threads.max(1);
    // Counted in blobs: at most this many decoded blobs are held or in flight.
    let window = threads * RUN_MAX_BLOBS;
    // Also bounded in bytes: a dump's chunks average 2 MiB, and 16 of them
    // decoded at once (plus a run's overshoot) made a restore's peak heap
    // 50 MB, above the Argon2id floor of every command (heaptrack).
    let window_bytes = threads as u64 * 2 * RUN_MAX_BYTES;
    std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<Vec<(usize, Id, BlobLocation)>>(threads * 2);
        // Room for every outstanding blob (a run may overshoot the window by one
        // run), so workers never block on results while the caller waits on jobs.
        let (res_tx, res_rx) = bounded::<(usize, Result<Vec<u8>>)>(window + RUN_MAX_BLOBS);
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            s.spawn(move || {
                for run in job_rx {
                    let pairs: Vec<(Id, BlobLocation)> = run.iter().map(|&(_, id, loc)| (id, loc)).collect();
                    let results = match repo.read_blob_run(&pairs) {
                        Ok(r) => r,
                        Err(e) => {
                            // The whole read failed: report it once, at the run's first blob.
                            let _ = res_tx.send((run[0].0, Err(e)));
                            return;
                        }
                    };
                    for ((seq, _, _), res) in run.iter().zip(results) {
                        if res_tx.send((*seq, res)).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(res_tx);
        let mut next_submit = 0;
        let mut next_emit = 0;
        // Plaintext bytes asked for and not yet handed to `sink`.
        let mut in_flight = 0u64;
        let mut held: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let result = (|| {
            while next_emit < ids.len() {
                while next_submit < ids.len()
                    && next_submit < next_emit + window
                    && (in_flight < window_bytes || next_submit == next_emit)
                {
                    let run = next_run(repo, ids, next_submit)?;
                    next_submit += run.len();
                    in_flight += run.iter().map(|(_, _, loc)| u64::from(loc.raw_length)).sum::<u64>();
                    job_tx.send(run).map_err(|_| Error::Invalid("blob reader stopped".into()))?;
                }
                while let Some(data) = held.remove(&next_emit) {
                    in_flight = in_flight.saturating_sub(data.len() as u64);
                    sink(data)?;
                    next_emit += 1;
                }
                if next_emit == next_submit {
                    // Everything asked for is written: ask for more (or
                    // stop) before waiting, or the wait would never end.
                    continue;
                }
                let (seq, res) = res_rx.recv().map_err(|_| Error::Invalid("blob reader stopped".into()))?;
                held.insert(seq, res?);
            }
            Ok(())
        })();
        drop(job_tx);
        // Drain so workers exit before the scope joins them.
        for _ in res_rx.iter() {}
        result
    })
}

/// A file's contents as a `Read`: blobs are fetched and opened ahead of the
/// reader by `for_each_blob_ordered` on a thread of its own, a few at a time.
pub struct BlobStream {
    blobs: crossbeam_channel::Receiver<Vec<u8>>,
    current: std::io::Cursor<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<Result<()>>>,
}

impl BlobStream {
    pub fn open(repo: std::sync::Arc<Repository>, ids: Vec<Id>, threads: usize) -> BlobStream {
        let (tx, rx) = bounded::<Vec<u8>>(threads.max(1) * 2);
        let worker = std::thread::spawn(move || {
            for_each_blob_ordered(&repo, &ids, threads, |blob| {
                tx.send(blob).map_err(|_| Error::Invalid("blob stream closed by its reader".into()))
            })
        });
        BlobStream { blobs: rx, current: std::io::Cursor::new(Vec::new()), worker: Some(worker) }
    }
}

impl std::io::Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.blobs.recv() {
                Ok(blob) => self.current = std::io::Cursor::new(blob),
                Err(_) => {
                    // The worker is done: its end is either the file's end or an error.
                    let Some(worker) = self.worker.take() else { return Ok(0) };
                    return match worker.join() {
                        Ok(Ok(())) => Ok(0),
                        Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                        Err(_) => Err(std::io::Error::other("blob reader panicked")),
                    };
                }
            }
        }
    }
}

/// Threads for reading `repo`: `SNAP_READ_THREADS` if set, else one per
/// core, or at least 8 where each read waits on a network round trip, so
/// requests overlap.
pub fn read_threads(repo: &Repository) -> usize {
    if let Some(n) = std::env::var("SNAP_READ_THREADS").ok().and_then(|v| v.parse::<usize>().ok()) {
        return n.clamp(1, 64);
    }
    let cores = default_threads();
    if repo.backend().is_remote() {
        cores.max(8)
    } else {
        cores
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::repo::backend::{Backend, BackendResult, FileInfo, FileKind, MemoryBackend};
    use crate::repo::format::tree::Node;
    use crate::repo::test_support::{store_file_with, test_repo};

    /// A backend where reading from one offset takes a while.
    struct SlowReads {
        inner: Arc<MemoryBackend>,
        slow_offset: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Backend for SlowReads {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn create(&self) -> BackendResult<()> {
            self.inner.create()
        }
        fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
            self.inner.list(kind)
        }
        fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
            self.inner.read(kind, name)
        }
        fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
            if offset == self.slow_offset.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            self.inner.read_range(kind, name, offset, length)
        }
        fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
            self.inner.size(kind, name)
        }
        fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
            self.inner.write(kind, name, data)
        }
        fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
            self.inner.delete(kind, name)
        }
    }

    /// 7 MB of noise whose last megabyte repeats its first.
    fn test_data() -> Vec<u8> {
        let mut x = 7u64;
        let mut data: Vec<u8> = (0..6_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as u8
            })
            .collect();
        let copy = data[..1_000_000].to_vec();
        data.extend_from_slice(&copy);
        data
    }

    /// Store `data` as one file in small chunks; its node.
    fn store_file(repo: &Arc<Repository>, data: &[u8]) -> Node {
        store_file_with(repo, |w| w.content_saver().save(data, "small", "f", false).unwrap())
    }

    /// Blobs come back whole and in order whatever the sink's pace, with
    /// small chunks (many runs per pack) and repeated chunks.
    #[test]
    fn ordered_reads_with_a_slow_sink() {
        let repo = test_repo(Arc::new(MemoryBackend::new()));
        let data = test_data();
        let node = store_file(&repo, &data);
        assert!(node.content.len() > 40, "{}", node.content.len());
        for threads in [1, 2, 4] {
            let mut out = Vec::new();
            let mut n = 0;
            for_each_blob_ordered(&repo, &node.content, threads, |d| {
                n += 1;
                if n % 7 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                out.extend_from_slice(&d);
                Ok(())
            })
            .unwrap();
            assert!(out == data, "threads {threads}");
        }
    }

    /// When every result but the one the writer needs next is in, the
    /// writer then catches up with all it asked for at once: that must lead
    /// to asking for more, not to waiting for nothing. Blobs read in
    /// reverse make runs of one blob; the first one read is slow.
    #[test]
    fn ordered_reads_when_the_awaited_blob_comes_last() {
        let slow_offset = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let repo =
            test_repo(Arc::new(SlowReads { inner: Arc::new(MemoryBackend::new()), slow_offset: slow_offset.clone() }));
        let node = store_file(&repo, &test_data());
        let mut reversed = node.content.clone();
        reversed.reverse();
        reversed.dedup();
        slow_offset.store(repo.index().get(&reversed[0]).unwrap().offset as u64, std::sync::atomic::Ordering::Relaxed);
        let expected: Vec<u8> = reversed.iter().flat_map(|id| repo.read_blob(id).unwrap()).collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = for_each_blob_ordered(&repo, &reversed, 2, |d| {
                out.extend_from_slice(&d);
                Ok(())
            });
            let _ = done_tx.send(r.map(|_| out));
        });
        let out = done_rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the reader hung").unwrap();
        assert!(out == expected);
    }
}
