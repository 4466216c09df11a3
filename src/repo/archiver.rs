//! Building a snapshot from a stream of entries.
//!
//! Callers add files, directories and symlinks in depth-first order with
//! each directory's entries sorted by name (the order `walkdir` with
//! `sort_by_file_name` yields). A builder thread assembles trees as
//! directories close, waiting on chunk tickets while the caller keeps
//! reading: only open directories are held in memory, never the whole tree.
//! The snapshot file is written last, after every pack and index it needs is
//! durable.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, Utc};
use crossbeam_channel::{bounded, Sender};

use super::chunker::{Chunker, CutHints};
use super::error::{Error, Result};
use super::format::blob::{BlobType, Dictionary};
use super::format::snapshot::{Snapshot, Source, Summary, SNAPSHOT_VERSION};
use super::format::tree::{Node, NodeKind, Tree};
use super::id::Id;
use super::repository::Repository;
use super::saver::{BlobSaver, Progress, Ticket};
use super::sysinfo;

/// Everything a snapshot records besides its tree and summary.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub time: Option<DateTime<Utc>>,
    pub host: Option<String>,
    pub tags: Vec<String>,
    pub source: Source,
    pub extra: serde_json::Value,
}

enum Event {
    Dir(Vec<Vec<u8>>, Node),
    Leaf(Vec<Vec<u8>>, Node, Vec<Ticket>),
}

struct OpenDir {
    name: Vec<u8>,
    node: Option<Node>,
    children: Vec<Node>,
}

#[derive(Default)]
struct TreeStats {
    files: u64,
    dirs: u64,
}

/// A file's contents, chunked and handed to the saver.
pub struct Content {
    tickets: Vec<Ticket>,
    pub size: u64,
    /// BLAKE3 of the bytes, when asked for.
    pub hash: Option<blake3::Hash>,
}

/// Chunks are handed to the saver's threads in batches of about this many
/// bytes: large enough that a batch of small table-data chunks costs one
/// hand-off, small enough that every thread has work and memory stays flat.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct ContentSaver {
    repo: Arc<Repository>,
    saver: Arc<BlobSaver>,
    chunkers: Arc<std::sync::Mutex<HashMap<(String, u8), Chunker>>>,
    progress: Arc<Progress>,
}

impl ContentSaver {
    fn chunker(&self, profile: &str, scale: u8) -> Result<Chunker> {
        let mut map = self.chunkers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (profile.to_string(), scale);
        if !map.contains_key(&key) {
            map.insert(key.clone(), self.repo.scaled_chunker(profile, scale)?);
        }
        Ok(map[&key].clone())
    }

    /// The first of `profiles` this repository's config has (the last
    /// if none), for callers that prefer a newer profile older
    /// repositories lack.
    pub fn first_profile<'p>(&self, profiles: &[&'p str]) -> &'p str {
        let config = self.repo.config();
        profiles.iter().find(|p| config.chunker.contains_key(**p)).copied().unwrap_or(profiles[profiles.len() - 1])
    }

    /// Chunk `reader` to its end and submit every chunk. `label` names the
    /// stream in errors. With `hash`, also BLAKE3 the whole stream.
    pub fn save(&self, reader: impl Read, profile: &str, label: &str, hash: bool) -> Result<Content> {
        self.save_scaled(reader, profile, 0, label, hash)
    }

    /// `save` with the profile's chunk sizes multiplied by 4^`scale`. The
    /// caller keeps `scale` (in its manifest) and uses it again for the
    /// same stream, or the stream stops deduplicating.
    pub fn save_scaled(&self, reader: impl Read, profile: &str, scale: u8, label: &str, hash: bool) -> Result<Content> {
        let chunker = self.chunker(profile, scale)?;
        self.save_chunks(chunker.stream(reader), label, hash, None)
    }

    /// `save_scaled`, compressing new chunks with `dictionary` (one the
    /// caller trained on this stream, or stored for it before).
    pub fn save_compressed_with(
        &self,
        reader: impl Read,
        profile: &str,
        scale: u8,
        dictionary: Option<Arc<Dictionary>>,
        label: &str,
    ) -> Result<Content> {
        let chunker = self.chunker(profile, scale)?;
        self.save_chunks(chunker.stream(reader), label, false, dictionary)
    }

    /// `bytes` prepared as a dictionary of this repository (for trying it
    /// out before storing it), or `None` if zstd cannot use them.
    pub fn prepare_dictionary(&self, bytes: &[u8]) -> Option<Dictionary> {
        Dictionary::new(self.repo.key().blob_id(bytes), bytes, self.compression_level())
    }

    /// Store a dictionary made by `prepare_dictionary` from `bytes`, for
    /// `save_compressed_with`.
    pub fn store_dictionary(&self, bytes: Vec<u8>, dictionary: Dictionary) -> Result<Arc<Dictionary>> {
        let id = self.saver.save_dictionary(bytes)?;
        debug_assert_eq!(id, dictionary.id);
        Ok(Arc::new(dictionary))
    }

    pub fn compression_level(&self) -> i32 {
        self.repo.config().compression_level
    }

    /// A dictionary stored by an earlier backup, if the index still has it.
    pub fn stored_dictionary(&self, id: &Id) -> Option<Arc<Dictionary>> {
        self.repo.dictionary(id).ok()
    }

    /// `save` of a regular file. A large one whose first chunks are all
    /// stored already (a re-read: `--force`, or a file touched but not
    /// changed) is cut on two threads: a planner cuts the rest from a
    /// quarter of the way in, and the reader, which also copies every
    /// chunk out, cuts until its chain of cuts meets the planner's and then
    /// takes the planner's. The chunks are the same as one thread's (a cut
    /// depends only on the bytes since the previous one). Nothing needs
    /// compressing in a re-read, so the gear hash on the reader's thread is
    /// what it waits for: 867 -> 734 ms for a 614 MB dump (hyperfine, 20
    /// runs). New data keeps one thread: there the planner's second read of
    /// the file only takes CPU from compression (1.27 -> 1.38 s).
    pub fn save_file(&self, file: &std::fs::File, profile: &str, label: &str) -> Result<Content> {
        let size = file.metadata().map_or(0, |m| m.len());
        let chunker = self.chunker(profile, 0)?;
        let mut chunks = chunker.stream(file);
        if size < PLANNED_FROM {
            return self.save_chunks(chunks, label, false, None);
        }
        let mut first = Vec::new();
        let mut probed = 0;
        while probed < PROBE_BYTES {
            match chunks.next() {
                Some(Ok(chunk)) => {
                    probed += chunk.len() as u64;
                    first.push(chunk);
                }
                Some(Err(e)) => return Err(Error::io(label, e)),
                None => break,
            }
        }
        let stored = {
            let index = self.repo.index();
            first.iter().all(|c| index.contains(&self.repo.key().blob_id(c)))
        };
        let start = probed + size.saturating_sub(probed) / 4;
        let slot = (stored && start < size).then(PlannerSlot::take).flatten();
        if slot.is_none() {
            return self.save_chunks(first.into_iter().map(Ok).chain(chunks), label, false, None);
        }
        let (planned, planner_out) = crossbeam_channel::unbounded();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::scope(|scope| {
            let (chunker, planner_stop) = (&chunker, stop.clone());
            scope.spawn(move || chunker.plan_cuts(ReadAt { file, at: start }, start, &planned, &planner_stop));
            chunks.set_hints(CutHints::new(planner_out, stop, start));
            self.save_chunks(first.into_iter().map(Ok).chain(chunks), label, false, None)
        })
    }

    fn save_chunks(
        &self,
        chunks: impl Iterator<Item = std::io::Result<Vec<u8>>>,
        label: &str,
        hash: bool,
        dictionary: Option<Arc<Dictionary>>,
    ) -> Result<Content> {
        let mut hasher = hash.then(blake3::Hasher::new);
        let mut tickets = Vec::new();
        let mut size = 0u64;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0;
        for chunk in chunks {
            let chunk = chunk.map_err(|e| Error::io(label, e))?;
            size += chunk.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            self.progress.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            batch_bytes += chunk.len();
            batch.push(chunk);
            if batch_bytes >= BATCH_BYTES {
                tickets.push(self.saver.submit_with(std::mem::take(&mut batch), BlobType::Data, dictionary.clone())?);
                batch_bytes = 0;
                if self.saver.failed() {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            tickets.push(self.saver.submit_with(batch, BlobType::Data, dictionary)?);
        }
        Ok(Content { tickets, size, hash: hasher.map(|h| h.finalize()) })
    }
}

/// Files from this size on may be cut on two threads (`save_file`).
const PLANNED_FROM: u64 = 32 << 20;
/// Bytes of a large file's first chunks looked up before it is.
const PROBE_BYTES: u64 = 4 << 20;

/// Planners running in this process: one at a time, since files are read
/// several at once and each planner holds a read buffer of its own (8 MiB
/// for the default profile) to use a core that the other readers share.
static PLANNERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The right to run a planner, given back when dropped.
struct PlannerSlot;

impl PlannerSlot {
    fn take() -> Option<PlannerSlot> {
        PLANNERS.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok().then_some(PlannerSlot)
    }
}

impl Drop for PlannerSlot {
    fn drop(&mut self) {
        PLANNERS.store(0, Ordering::Release);
    }
}

/// Reads a file from an offset on without moving the file's own offset,
/// which another reader is using.
struct ReadAt<'f> {
    file: &'f std::fs::File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

pub struct SnapshotWriter {
    repo: Arc<Repository>,
    /// Holds the blob saver; `None` once finished.
    content: Option<ContentSaver>,
    events: Option<Sender<Event>>,
    builder: Option<JoinHandle<Result<(Id, TreeStats)>>>,
    progress: Arc<Progress>,
    started: Instant,
}

impl SnapshotWriter {
    pub fn new(repo: Arc<Repository>, progress: Arc<Progress>) -> Result<SnapshotWriter> {
        repo.load_index()?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let saver = Arc::new(BlobSaver::new(repo.clone(), progress.clone(), threads));
        let (tx, rx) = bounded::<Event>(1024);
        let builder = {
            let saver = saver.clone();
            let progress = progress.clone();
            std::thread::spawn(move || build_trees(&saver, &progress, rx))
        };
        Ok(SnapshotWriter {
            repo: repo.clone(),
            content: Some(ContentSaver {
                repo: repo.clone(),
                saver,
                chunkers: Arc::new(std::sync::Mutex::new(HashMap::new())),
                progress: progress.clone(),
            }),
            events: Some(tx),
            builder: Some(builder),
            progress,
            started: Instant::now(),
        })
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    fn send(&mut self, ev: Event) -> Result<()> {
        if self.events.as_ref().expect("writer used after finish").send(ev).is_err() {
            // The builder stopped: its own error is the one to report.
            return Err(self.join_builder().err().unwrap_or_else(|| Error::Invalid("tree builder stopped".into())));
        }
        Ok(())
    }

    /// Add a file, streaming `reader` through the chunker. Returns the bytes
    /// read. `node.size` is set from what was actually read.
    pub fn add_file(&mut self, path: Vec<Vec<u8>>, node: Node, reader: impl Read, profile: &str) -> Result<u64> {
        let content = self.content_saver().save(reader, profile, &display_path(&path), false)?;
        let size = content.size;
        self.add_content(path, node, content)?;
        Ok(size)
    }

    /// A handle that chunks and saves file contents from any thread, so that
    /// several streams can be read at once and added in tree order later.
    /// Every clone must be dropped before [`SnapshotWriter::finish`].
    pub fn content_saver(&self) -> ContentSaver {
        self.content.clone().expect("writer used after finish")
    }

    /// Add a file whose contents a [`ContentSaver`] has saved.
    pub fn add_content(&mut self, path: Vec<Vec<u8>>, mut node: Node, content: Content) -> Result<()> {
        node.kind = NodeKind::File;
        node.size = content.size;
        self.send(Event::Leaf(path, node, content.tickets))
    }

    /// Add a file whose data blobs are already in the repository (taken from
    /// an earlier snapshot); `node.content` and `node.size` must be set.
    /// Fails if a blob is not in the index (e.g. removed by prune since).
    pub fn add_existing(&mut self, path: Vec<Vec<u8>>, mut node: Node) -> Result<()> {
        {
            let index = self.repo.index();
            if let Some(missing) = node.content.iter().find(|id| !index.contains(id)) {
                return Err(Error::MissingBlob(*missing));
            }
        }
        node.kind = NodeKind::File;
        // Counted as processed, as an unchanged file that is read again would be.
        self.progress.bytes_read.fetch_add(node.size, Ordering::Relaxed);
        self.send(Event::Leaf(path, node, Vec::new()))
    }

    /// Add a directory with its metadata; its entries must follow.
    /// Directories named only as parents of other entries get default metadata.
    pub fn add_dir(&mut self, path: Vec<Vec<u8>>, mut node: Node) -> Result<()> {
        node.kind = NodeKind::Dir;
        self.send(Event::Dir(path, node))
    }

    pub fn add_symlink(&mut self, path: Vec<Vec<u8>>, mut node: Node) -> Result<()> {
        node.kind = NodeKind::Symlink;
        if node.target.is_none() {
            return Err(Error::Invalid(format!("symlink {} has no target", display_path(&path))));
        }
        self.send(Event::Leaf(path, node, Vec::new()))
    }

    fn join_builder(&mut self) -> Result<(Id, TreeStats)> {
        drop(self.events.take());
        match self.builder.take() {
            Some(h) => h.join().unwrap_or_else(|_| Err(Error::Invalid("tree builder panicked".into()))),
            None => Err(Error::Invalid("tree builder already finished".into())),
        }
    }

    /// Close every tree, wait for all data to be durable, then write the
    /// snapshot file.
    pub fn finish(self, meta: SnapshotMeta) -> Result<(Id, Snapshot)> {
        self.finish_with(meta, |_| {})
    }

    /// `finish`, letting the caller set fields `SnapshotMeta` has no room
    /// for (a copy keeps its original's user and records where it came from).
    pub fn finish_with(mut self, meta: SnapshotMeta, adjust: impl FnOnce(&mut Snapshot)) -> Result<(Id, Snapshot)> {
        let built = self.join_builder();
        let saver = Arc::try_unwrap(self.content.take().expect("saver present").saver)
            .map_err(|_| Error::Invalid("blob saver still shared".into()))?;
        let saved = saver.finish();
        let (root, stats) = built?;
        saved?;
        let p = &self.progress;
        let mut snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            time: meta.time.unwrap_or_else(Utc::now),
            host: meta.host.unwrap_or_else(sysinfo::hostname),
            username: sysinfo::username(),
            tags: meta.tags,
            source: meta.source,
            tree: root,
            summary: Summary {
                files: stats.files,
                dirs: stats.dirs,
                bytes_read: Progress::get(&p.bytes_read),
                bytes_added: Progress::get(&p.bytes_added),
                chunks_total: Progress::get(&p.chunks),
                chunks_new: Progress::get(&p.chunks_new),
                duration_s: 0.0,
            },
            extra: meta.extra,
            lost: Vec::new(),
            original: None,
            copied_from: None,
        };
        snapshot.summary.duration_s = (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        adjust(&mut snapshot);
        super::failpoint::hit("create-before-snapshot");
        let id = self.repo.write_snapshot(&snapshot)?;
        Ok((id, snapshot))
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.builder.is_some() {
            let _ = self.join_builder();
        }
    }
}

pub fn display_path(path: &[Vec<u8>]) -> String {
    path.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("/")
}

fn build_trees(
    saver: &BlobSaver,
    progress: &Progress,
    events: crossbeam_channel::Receiver<Event>,
) -> Result<(Id, TreeStats)> {
    let mut stack = vec![OpenDir { name: Vec::new(), node: None, children: Vec::new() }];
    let mut stats = TreeStats::default();
    for ev in events {
        let path = match &ev {
            Event::Dir(p, _) | Event::Leaf(p, _, _) => p,
        };
        if path.is_empty() || path.iter().any(|c| c.is_empty() || c == b"." || c == b".." || c.contains(&b'/')) {
            return Err(Error::Invalid(format!("invalid path {:?} in snapshot", display_path(path))));
        }
        let parents = &path[..path.len() - 1];
        let common = stack[1..].iter().zip(parents).take_while(|(d, c)| &d.name == *c).count();
        while stack.len() - 1 > common {
            close_dir(&mut stack, saver, &mut stats)?;
        }
        for c in &parents[common..] {
            stack.push(OpenDir { name: c.clone(), node: None, children: Vec::new() });
        }
        let name = path.last().expect("non-empty path").clone();
        match ev {
            Event::Dir(_, node) => {
                stack.push(OpenDir { name, node: Some(node), children: Vec::new() });
            }
            Event::Leaf(p, mut node, tickets) => {
                for t in tickets {
                    let saved = t.recv().map_err(|_| Error::Invalid("blob saver stopped".into()))??;
                    node.content.extend(saved.iter().map(|s| s.id));
                }
                if node.kind == NodeKind::File {
                    stats.files += 1;
                    progress.files.fetch_add(1, Ordering::Relaxed);
                }
                let (n, raw) = super::format::tree::encode_name(&name);
                node.name = n;
                node.name_raw = raw;
                push_child(stack.last_mut().expect("root present"), node, &p)?;
            }
        }
    }
    while stack.len() > 1 {
        close_dir(&mut stack, saver, &mut stats)?;
    }
    let root = stack.pop().expect("root present");
    let id = saver.save_tree(Tree { nodes: root.children }.encode())?;
    Ok((id, stats))
}

fn push_child(dir: &mut OpenDir, node: Node, path: &[Vec<u8>]) -> Result<()> {
    if let Some(last) = dir.children.last() {
        if last.name_bytes() >= node.name_bytes() {
            return Err(Error::Invalid(format!(
                "{} was added out of order or twice (entries must come sorted, depth first)",
                display_path(path)
            )));
        }
    }
    dir.children.push(node);
    Ok(())
}

fn close_dir(stack: &mut Vec<OpenDir>, saver: &BlobSaver, stats: &mut TreeStats) -> Result<()> {
    let dir = stack.pop().expect("non-root dir");
    let id = saver.save_tree(Tree { nodes: dir.children }.encode())?;
    let mut node = dir.node.unwrap_or_else(|| Node::new(&dir.name, NodeKind::Dir));
    let (n, raw) = super::format::tree::encode_name(&dir.name);
    node.name = n;
    node.name_raw = raw;
    node.kind = NodeKind::Dir;
    node.subtree = Some(id);
    stats.dirs += 1;
    let parent_path: Vec<Vec<u8>> =
        stack[1..].iter().map(|d| d.name.clone()).chain(std::iter::once(dir.name)).collect();
    push_child(stack.last_mut().expect("root present"), node, &parent_path)
}
