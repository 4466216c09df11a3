//! The blob save pipeline.
//!
//! ```text
//! caller ──submit(chunk)──▶ [jobs, bounded] ──▶ N workers ──▶ [packs, bounded] ──▶ writer
//!    ◀────── ticket (id, new?) ───────────────────┘                              │
//!                                    pack file + index file, durable ◀───────────┘
//! ```
//! Workers hash (keyed BLAKE3), skip blobs the index or this session already
//! has, compress, seal and append to the open pack of the blob's type. The
//! writer seals pack headers, writes packs, and writes an index file every
//! `INDEX_EVERY` packs and at the end, always after the packs it lists are
//! durable. Bounded channels keep memory flat: at most `2 × workers`
//! batches queued. On a local disk the packs fill staged files
//! (`Backend::stage`) and cost no memory; on object storage two open packs
//! and one full pack per concurrent write (`Backend::parallel_writes`)
//! are held in memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::error::{Error, Result};
use super::format::blob::{BlobEncoder, BlobType, Dictionary};
use super::format::index::{IndexFile, IndexPack};
use super::format::pack::PackEntry;
use super::id::Id;
use super::packer::PackBuilder;
use super::repository::Repository;

/// Write an index file after this many packs, so an interrupted run still
/// lets the next one skip what was already uploaded.
const INDEX_EVERY: usize = 64;
/// ... or once it would list this many blobs, so no index file has to be
/// held whole in memory when it is read or rewritten.
pub const BLOBS_PER_INDEX_FILE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Saved {
    pub id: Id,
    /// Stored by this call (false: the repository or session had it).
    pub new: bool,
}

/// Yields the ids of a submitted batch, in order, once all are stored.
pub type Ticket = Receiver<Result<Vec<Saved>>>;

/// Live counters, readable from another thread for progress display.
#[derive(Default, Debug)]
pub struct Progress {
    pub bytes_read: AtomicU64,
    pub files: AtomicU64,
    pub chunks: AtomicU64,
    pub chunks_new: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_added: AtomicU64,
}

impl Progress {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }
}

/// Live counters of work whose total is known up front (restore, reading
/// packs in check), for progress display.
#[derive(Default, Debug)]
pub struct WorkProgress {
    pub done_items: AtomicU64,
    pub total_items: AtomicU64,
    pub done_bytes: AtomicU64,
    pub total_bytes: AtomicU64,
}

impl WorkProgress {
    pub fn set_total(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
    }
    pub fn add_bytes(&self, n: u64) {
        self.done_bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub fn item_done(&self) {
        self.done_items.fetch_add(1, Ordering::Relaxed);
    }
}

/// A batch of blobs of one type. Small chunks travel in batches so that
/// handing work to a thread and back costs once per batch, not per chunk.
struct Job {
    items: Vec<Vec<u8>>,
    blob_type: BlobType,
    /// Known already (trees, whose id the caller needs at once).
    id: Option<Id>,
    /// What new data blobs of the batch are compressed with.
    dictionary: Option<Arc<Dictionary>>,
    reply: Option<Sender<Result<Vec<Saved>>>>,
}

struct Shared {
    repo: Arc<Repository>,
    /// Blobs being stored in this session whose pack is not yet indexed.
    claimed: Mutex<HashSet<Id>>,
    /// Packs moved from `claimed` to the index so far.
    settled: AtomicU64,
    open: [Mutex<PackBuilder>; 2],
    failure: Mutex<Option<Error>>,
    progress: Arc<Progress>,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }
    fn failed(&self) -> bool {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Whether this caller is the one to store `id`, which the index did
    /// not have when `settled` was read: no one in this session has claimed
    /// it, and no pack settled since has put it in the index (`settle` moves
    /// ids from the claims to the index, so one that settled between the
    /// caller's lookup and this lock is in neither place it looked).
    fn claim(&self, id: &Id, settled: u64) -> bool {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        if claimed.contains(id) {
            return false;
        }
        if self.settled.load(Ordering::Acquire) != settled && self.repo.index().contains(id) {
            return false;
        }
        claimed.insert(*id)
    }

    /// A pack is in the index now: its blobs need no claim any more, so
    /// the claims hold only blobs in packs not yet written.
    fn settle(&self, pack: &IndexPack) {
        {
            let mut index = self.repo.index_mut();
            index.add_pack(pack.id, &pack.blobs);
            index.compact();
        }
        self.settled.fetch_add(1, Ordering::Release);
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        for b in &pack.blobs {
            claimed.remove(&b.id);
        }
    }
}

pub struct BlobSaver {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    packs: Option<Sender<PackBuilder>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl BlobSaver {
    /// The repository's index must be loaded, or nothing deduplicates
    /// against earlier snapshots.
    pub fn new(repo: Arc<Repository>, progress: Arc<Progress>, threads: usize) -> BlobSaver {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            repo,
            claimed: Mutex::new(HashSet::new()),
            settled: AtomicU64::new(0),
            open: [Mutex::new(PackBuilder::new()), Mutex::new(PackBuilder::new())],
            failure: Mutex::new(None),
            progress,
        });
        let (job_tx, job_rx) = bounded::<Job>(threads * 2);
        // A hand-over, not a queue: a full pack waits for the writer inside
        // the worker that filled it, so at most three packs are in memory
        // (one filling, one handed over, one being written).
        let (pack_tx, pack_rx) = bounded::<PackBuilder>(0);
        let workers = (0..threads)
            .map(|_| {
                let shared = shared.clone();
                let jobs = job_rx.clone();
                let packs = pack_tx.clone();
                std::thread::spawn(move || worker(&shared, &jobs, &packs))
            })
            .collect();
        let writer = {
            let shared = shared.clone();
            std::thread::spawn(move || writer(&shared, &pack_rx))
        };
        BlobSaver { shared, jobs: Some(job_tx), packs: Some(pack_tx), workers, writer: Some(writer) }
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .expect("saver used after finish")
            .send(job)
            .map_err(|_| Error::Invalid("blob saver stopped unexpectedly".into()))
    }

    /// Queue chunks; the ticket yields their ids, in order, once hashed
    /// and stored.
    pub fn submit(&self, items: Vec<Vec<u8>>, blob_type: BlobType) -> Result<Ticket> {
        self.submit_with(items, blob_type, None)
    }

    /// `submit`, compressing the new blobs with `dictionary`.
    pub fn submit_with(
        &self,
        items: Vec<Vec<u8>>,
        blob_type: BlobType,
        dictionary: Option<Arc<Dictionary>>,
    ) -> Result<Ticket> {
        let (tx, rx) = bounded(1);
        self.send(Job { items, blob_type, id: None, dictionary, reply: Some(tx) })?;
        Ok(rx)
    }

    /// Store a tree blob. Its id is computed here so the caller can refer to
    /// it at once; storage happens in the background.
    pub fn save_tree(&self, bytes: Vec<u8>) -> Result<Id> {
        self.save_one(bytes, BlobType::Tree)
    }

    /// Store a dictionary blob, like a tree: its id at once, stored in the
    /// background, durable when `finish` returns.
    pub fn save_dictionary(&self, bytes: Vec<u8>) -> Result<Id> {
        self.save_one(bytes, BlobType::Dictionary)
    }

    fn save_one(&self, bytes: Vec<u8>, blob_type: BlobType) -> Result<Id> {
        let id = self.shared.repo.key().blob_id(&bytes);
        self.send(Job { items: vec![bytes], blob_type, id: Some(id), dictionary: None, reply: None })?;
        Ok(id)
    }

    pub fn failed(&self) -> bool {
        self.shared.failed()
    }

    /// Drain the pipeline: every blob submitted is in a durable pack listed
    /// by a durable index file when this returns `Ok`.
    pub fn finish(mut self) -> Result<()> {
        self.shutdown();
        match self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(packs) = self.packs.take() {
            for slot in &self.shared.open {
                let mut open = slot.lock().unwrap_or_else(|p| p.into_inner());
                if !open.is_empty() {
                    let _ = packs.send(std::mem::take(&mut *open));
                }
            }
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for BlobSaver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: &Shared, jobs: &Receiver<Job>, packs: &Sender<PackBuilder>) {
    let repo = &shared.repo;
    let mut encoder = BlobEncoder::new(repo.config().compression_level);
    let pack_size = repo.config().pack_size as usize;
    for job in jobs {
        let mut saved = Vec::with_capacity(job.items.len());
        for data in &job.items {
            let id = job.id.unwrap_or_else(|| repo.key().blob_id(data));
            let settled = shared.settled.load(Ordering::Acquire);
            let new = !repo.index().contains(&id) && shared.claim(&id, settled);
            if job.blob_type == BlobType::Data {
                shared.progress.chunks.fetch_add(1, Ordering::Relaxed);
            }
            if new {
                let blob = NewBlob { blob_type: job.blob_type, id, data, dictionary: job.dictionary.as_deref() };
                store(shared, &mut encoder, packs, blob, pack_size);
            }
            saved.push(Saved { id, new });
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(Ok(saved));
        }
    }
}

struct NewBlob<'a> {
    blob_type: BlobType,
    id: Id,
    data: &'a [u8],
    dictionary: Option<&'a Dictionary>,
}

/// Compress, seal and append one new blob to the open pack of its type,
/// handing the pack to the writer once full.
fn store(shared: &Shared, encoder: &mut BlobEncoder, packs: &Sender<PackBuilder>, blob: NewBlob, pack_size: usize) {
    let NewBlob { blob_type, id, data, dictionary } = blob;
    let encoded = encoder.encode(shared.repo.key(), blob_type, &id, data, dictionary);
    if blob_type == BlobType::Data {
        shared.progress.chunks_new.fetch_add(1, Ordering::Relaxed);
        shared.progress.bytes_new.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    let entry = PackEntry {
        blob_type,
        compression: encoded.compression,
        id,
        length: encoded.bytes.len() as u32,
        raw_length: data.len() as u32,
    };
    let full = {
        let mut open = shared.open[blob_type.pack_slot()].lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = open.push(&shared.repo, entry, &encoded.bytes, pack_size) {
            shared.fail(e);
            return;
        }
        (open.len() >= pack_size).then(|| std::mem::take(&mut *open))
    };
    if let Some(full) = full {
        if packs.send(full).is_err() {
            shared.fail(Error::Invalid("pack writer stopped unexpectedly".into()));
        }
    }
}

/// Write packs as they fill, `parallel_writes` at a time (one on a local
/// disk; several where each write is a network round trip), and an index
/// file after every `INDEX_EVERY` packs and at the end, each listing only
/// packs whose write has returned.
fn writer(shared: &Shared, packs: &Receiver<PackBuilder>) {
    let repo = &shared.repo;
    let pending: Mutex<Vec<IndexPack>> = Mutex::new(Vec::new());
    let flush = |pending: &mut Vec<IndexPack>| {
        if pending.is_empty() || shared.failed() {
            return;
        }
        let file = IndexFile { supersedes: Vec::new(), packs: std::mem::take(pending) };
        match repo.write_index_file(&file) {
            Ok((_, len)) => {
                shared.progress.bytes_added.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => shared.fail(e),
        }
    };
    let upload = || {
        for pack in packs {
            if shared.failed() {
                continue;
            }
            let (written, len) = match pack.write(repo) {
                Ok(w) => w,
                Err(e) => {
                    shared.fail(e);
                    continue;
                }
            };
            shared.progress.bytes_added.fetch_add(len, Ordering::Relaxed);
            shared.settle(&written);
            let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(written);
            if pending.len() >= INDEX_EVERY
                || pending.iter().map(|p| p.blobs.len()).sum::<usize>() >= BLOBS_PER_INDEX_FILE
            {
                flush(&mut pending);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..repo.backend().parallel_writes() {
            scope.spawn(upload);
        }
        upload();
    });
    flush(&mut pending.into_inner().unwrap_or_else(|p| p.into_inner()));
}
