//! `snap create` for files, directories, standard input and command output.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::super::archiver::{Content, ContentSaver, SnapshotMeta, SnapshotWriter};
use super::super::error::{Error, Result};
use super::super::format::config::PROFILE_DEFAULT;
use super::super::format::snapshot::{Snapshot, Source};
use super::super::format::tree::{Node, NodeKind};
use super::super::id::Id;
use super::super::repository::Repository;
use super::super::saver::Progress;

pub struct CreateReport {
    pub id: Id,
    pub snapshot: Snapshot,
    /// Entries that could not be read and were left out.
    pub warnings: Vec<String>,
    /// Files taken unread from the parent snapshot.
    pub unchanged_files: u64,
}

/// Exclude patterns: a pattern with a `/` matches the whole absolute path,
/// one without matches any single name (so `*.log` or `node_modules`).
pub struct Excludes {
    full: GlobSet,
    name: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut full = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        for p in patterns {
            let bad = |e: globset::Error| Error::Invalid(format!("bad exclude pattern {p:?}: {e}"));
            if p.contains('/') {
                full.add(GlobBuilder::new(p.trim_end_matches('/')).literal_separator(true).build().map_err(bad)?);
            } else {
                name.add(Glob::new(p).map_err(bad)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::Invalid(format!("bad exclude pattern: {e}")));
        Ok(Excludes { full: build(full)?, name: build(name)? })
    }

    pub fn matches(&self, path: &Path) -> bool {
        self.full.is_match(path) || path.file_name().is_some_and(|n| self.name.is_match(n))
    }
}

pub fn node_from_metadata(name: &[u8], meta: &fs::Metadata) -> Node {
    let kind = if meta.is_dir() {
        NodeKind::Dir
    } else if meta.file_type().is_symlink() {
        NodeKind::Symlink
    } else {
        NodeKind::File
    };
    let mut n = Node::new(name, kind);
    n.mode = meta.permissions().mode() & 0o7777;
    n.mtime_ns = unix_ns(meta.mtime(), meta.mtime_nsec());
    n.uid = meta.uid();
    n.gid = meta.gid();
    if kind == NodeKind::File {
        n.size = meta.len();
        n.ctime_ns = Some(unix_ns(meta.ctime(), meta.ctime_nsec()));
        n.inode = Some(meta.ino());
    }
    n
}

fn unix_ns(secs: i64, nanos: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The newest snapshot of exactly these (absolute) paths from `host`: the
/// parent whose unchanged files a new backup of them takes unread.
pub fn find_parent(repo: &Repository, host: &str, paths: &[String]) -> Result<Option<(Id, Snapshot)>> {
    let (mut all, _) = repo.list_snapshots()?;
    all.retain(|(_, s)| s.host == host && matches!(&s.source, Source::Paths { paths: p } if p == paths));
    Ok(all.pop())
}

/// The parent snapshot's entries along the walk, read one directory at a
/// time as the walk (depth first, names sorted) reaches it, so that a file
/// unchanged since then is taken from it instead of being read again.
struct ParentTrees<'r> {
    repo: &'r Repository,
    /// The root's entries, then one level per directory down to the one
    /// the walk is in: its name and the parent's entries there (none where
    /// the parent had no such directory, or its tree cannot be read: the
    /// files are then read, which costs time, never data).
    levels: Vec<(Vec<u8>, Entries)>,
}

/// A directory's entries by name.
type Entries = HashMap<Vec<u8>, Node>;

impl<'r> ParentTrees<'r> {
    fn new(repo: &'r Repository, root: Id) -> ParentTrees<'r> {
        let mut trees = ParentTrees { repo, levels: Vec::new() };
        let entries = trees.entries(Some(root));
        trees.levels.push((Vec::new(), entries));
        trees
    }

    fn entries(&self, tree: Option<Id>) -> Entries {
        let Some(tree) = tree.and_then(|id| self.repo.read_tree(&id).ok()) else {
            return HashMap::new();
        };
        tree.nodes.into_iter().map(|n| (n.name_bytes(), n)).collect()
    }

    /// The parent's node for `path`, if it is the same file as `node`
    /// (same size, mtime, ctime and inode) and all its blobs are still in
    /// the repository: `node` with the parent's contents.
    fn unchanged(&mut self, path: &[Vec<u8>], node: &Node) -> Option<Node> {
        let (name, dir) = path.split_last()?;
        let common = self.levels[1..].iter().zip(dir).take_while(|((level, _), c)| level == *c).count();
        self.levels.truncate(common + 1);
        for component in &dir[common..] {
            let subtree = self.levels.last().and_then(|(_, e)| e.get(component)).and_then(|n| n.subtree);
            let entries = self.entries(subtree);
            self.levels.push((component.clone(), entries));
        }
        let old = self.levels.last()?.1.get(name)?;
        let same = old.kind == NodeKind::File
            && old.size == node.size
            && old.mtime_ns == node.mtime_ns
            && old.ctime_ns.is_some()
            && old.ctime_ns == node.ctime_ns
            && old.inode == node.inode
            && (old.size == 0) == old.content.is_empty();
        if !same {
            return None;
        }
        let index = self.repo.index();
        if !old.content.iter().all(|id| index.contains(id)) {
            return None;
        }
        Some(Node { content: old.content.clone(), ..node.clone() })
    }
}

fn top_name(path: &Path) -> Result<Vec<u8>> {
    let abs = fs::canonicalize(path).map_err(|e| Error::io(path.display(), e))?;
    Ok(match abs.file_name() {
        Some(n) => n.as_bytes().to_vec(),
        None => b"root".to_vec(),
    })
}

/// Back up files and directories. Each argument appears at the top of the
/// snapshot under its own name; two arguments with the same name are refused.
/// Files unchanged since the `parent` snapshot (same path, size, mtime,
/// ctime and inode) take its blobs without being read.
pub fn create_from_paths(
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    paths: &[PathBuf],
    excludes: &Excludes,
    parent: Option<&Snapshot>,
    meta: SnapshotMeta,
) -> Result<CreateReport> {
    let mut tops: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for p in paths {
        fs::symlink_metadata(p).map_err(|e| Error::io(p.display(), e))?;
        tops.push((top_name(p)?, p.clone()));
    }
    tops.sort();
    for w in tops.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Invalid(format!(
                "{} and {} would both be stored as {:?}; back them up in separate snapshots or from their parent",
                w[0].1.display(),
                w[1].1.display(),
                String::from_utf8_lossy(&w[0].0)
            )));
        }
    }
    let mut writer = SnapshotWriter::new(repo.clone(), progress)?;
    let mut warnings = Vec::new();
    let mut unchanged_files = 0;
    let mut parent = parent.map(|p| ParentTrees::new(&repo, p.tree));
    let saver = writer.content_saver();
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
    let walked = std::thread::scope(|scope| -> Result<()> {
        let (jobs, queue) = crossbeam_channel::bounded::<ReadJob>(readers);
        for _ in 0..readers {
            let queue = queue.clone();
            let saver = saver.clone();
            scope.spawn(move || {
                for job in queue {
                    let _ = job.reply.send(read_file(&saver, &job.path));
                }
            });
        }
        drop(saver);
        let mut pending = std::collections::VecDeque::new();
        for (top, root) in &tops {
            walk_root(top, root, excludes, &mut warnings, |mut entry, warnings| {
                if entry.file.is_some() {
                    if let Some(reused) = parent.as_mut().and_then(|p| p.unchanged(&entry.path, &entry.node)) {
                        entry = Walked { path: entry.path, node: reused, file: None };
                        unchanged_files += 1;
                    }
                }
                let file = match entry.file {
                    Some(source) => {
                        let (reply, content) = crossbeam_channel::bounded(1);
                        jobs.send(ReadJob { path: source.clone(), reply })
                            .map_err(|_| Error::Invalid("file readers stopped unexpectedly".into()))?;
                        Some((source, content))
                    }
                    None => None,
                };
                let entry = Walked { path: entry.path, node: entry.node, file };
                pending.push_back(entry);
                while pending.len() > READ_AHEAD {
                    let front = pending.pop_front().expect("queue is not empty");
                    add_in_order(&mut writer, front, warnings)?;
                }
                Ok(())
            })?;
        }
        drop(jobs);
        for entry in pending {
            add_in_order(&mut writer, entry, &mut warnings)?;
        }
        Ok(())
    });
    walked?;
    drop(parent);
    let (id, snapshot) = writer.finish(meta)?;
    Ok(CreateReport { id, snapshot, warnings, unchanged_files })
}

/// Entries walked but not yet added: several files are read at once, and
/// entries must reach the snapshot writer in walk order.
const READ_AHEAD: usize = 64;

/// One entry of the walk, in the order the snapshot writer needs; `file`
/// is set for regular files only: first their path, then also the reply
/// of the reader that saves them.
struct Walked<F> {
    path: Vec<Vec<u8>>,
    node: Node,
    file: Option<F>,
}

type Pending = Walked<(PathBuf, crossbeam_channel::Receiver<FileRead>)>;

struct ReadJob {
    path: PathBuf,
    reply: crossbeam_channel::Sender<FileRead>,
}

/// A file's saved contents; `Ok(Err(_))` when it could not be opened
/// (a warning: the file is left out), `Err` when reading it failed part
/// way (the backup fails).
type FileRead = Result<std::result::Result<Content, std::io::Error>>;

fn read_file(saver: &ContentSaver, path: &Path) -> FileRead {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let label = path.display().to_string();
    saver.save_file(&file, PROFILE_DEFAULT, &label).map(Ok).map_err(|e| match e {
        Error::Io { source, .. } => Error::io(path.display(), source),
        other => other,
    })
}

fn add_in_order(writer: &mut SnapshotWriter, entry: Pending, warnings: &mut Vec<String>) -> Result<()> {
    let Walked { path, node, file } = entry;
    let Some((source, content)) = file else {
        return match node.kind {
            NodeKind::Dir => writer.add_dir(path, node),
            NodeKind::File => writer.add_existing(path, node),
            _ => writer.add_symlink(path, node),
        };
    };
    let read = content.recv().map_err(|_| Error::Invalid("a file reader stopped unexpectedly".into()))?;
    match read? {
        Ok(content) => writer.add_content(path, node, content),
        Err(e) => {
            warnings.push(format!("{}: {e}", source.display()));
            Ok(())
        }
    }
}

/// Change times from this one on are too recent to vouch for a file.
fn racy_after() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX).saturating_sub(RACY_NS)
}

const RACY_NS: i64 = 2_000_000_000;

/// Walk one argument depth first, names sorted, handing each entry to
/// `add`; what cannot be read becomes a warning.
fn walk_root(
    top: &[u8],
    root: &Path,
    excludes: &Excludes,
    warnings: &mut Vec<String>,
    mut add: impl FnMut(Walked<PathBuf>, &mut Vec<String>) -> Result<()>,
) -> Result<()> {
    let mut walk = walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name().into_iter();
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                warnings.push(format!("{}: {}", e.path().map(|p| p.display().to_string()).unwrap_or_default(), e));
                continue;
            }
        };
        if entry.depth() > 0 && excludes.matches(entry.path()) {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        let mut path = vec![top.to_vec()];
        if let Ok(rel) = entry.path().strip_prefix(root) {
            path.extend(rel.components().map(|c| c.as_os_str().as_bytes().to_vec()));
        }
        let meta = match entry.path().symlink_metadata() {
            Ok(m) => m,
            Err(e) => {
                warnings.push(format!("{}: {e}", entry.path().display()));
                continue;
            }
        };
        let name = path.last().expect("path has a top").clone();
        let mut node = node_from_metadata(&name, &meta);
        if node.ctime_ns.is_some_and(|c| c >= racy_after()) {
            // File times tick coarsely (a few ms): a write just after this
            // stat, in the same tick, would leave ctime as it is now and
            // the next backup would take the contents read here. Such a
            // file records no ctime, so it is read again next time.
            node.ctime_ns = None;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            add(Walked { path, node, file: None }, warnings)?;
        } else if ft.is_symlink() {
            match fs::read_link(entry.path()) {
                Ok(target) => {
                    let (t, raw) = super::super::format::tree::encode_name(target.as_os_str().as_bytes());
                    node.target = Some(t);
                    node.target_raw = raw;
                    add(Walked { path, node, file: None }, warnings)?;
                }
                Err(e) => warnings.push(format!("{}: {e}", entry.path().display())),
            }
        } else if ft.is_file() {
            add(Walked { path, node, file: Some(entry.path().to_path_buf()) }, warnings)?;
        } else {
            warnings.push(format!("{}: skipped (not a regular file, directory or symlink)", entry.path().display()));
        }
    }
    Ok(())
}

fn stream_node(name: &str) -> Node {
    let mut node = Node::new(name.as_bytes(), NodeKind::File);
    node.mode = 0o600;
    node.mtime_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    node
}

fn check_stream_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::Invalid(format!("{name:?} is not a valid file name for the stream")));
    }
    Ok(())
}

/// Store one stream as a single file called `name`.
pub fn create_from_reader(
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    name: &str,
    reader: impl Read,
    meta: SnapshotMeta,
) -> Result<CreateReport> {
    check_stream_name(name)?;
    let mut writer = SnapshotWriter::new(repo, progress)?;
    writer.add_file(vec![name.as_bytes().to_vec()], stream_node(name), reader, PROFILE_DEFAULT)?;
    let (id, snapshot) = writer.finish(meta)?;
    Ok(CreateReport { id, snapshot, warnings: Vec::new(), unchanged_files: 0 })
}

/// Store a command's standard output as `name`. If the command fails, no
/// snapshot is written (the blobs already stored are unreferenced and prune
/// removes them).
pub fn create_from_command(
    repo: Arc<Repository>,
    progress: Arc<Progress>,
    name: &str,
    command: &[String],
    meta: SnapshotMeta,
) -> Result<CreateReport> {
    check_stream_name(name)?;
    let program = command.first().ok_or_else(|| Error::Invalid("no command given after --".into()))?;
    let mut child = Command::new(program)
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::SourceFailed(format!("cannot run {program}: {e}")))?;
    let stdout = child.stdout.take().expect("stdout piped");
    super::super::sysinfo::enlarge_pipe(&stdout);
    let mut writer = SnapshotWriter::new(repo, progress)?;
    let added = writer.add_file(vec![name.as_bytes().to_vec()], stream_node(name), stdout, PROFILE_DEFAULT);
    let status = child.wait().map_err(|e| Error::SourceFailed(format!("waiting for {program}: {e}")))?;
    added?;
    if !status.success() {
        drop(writer);
        return Err(Error::SourceFailed(format!("{program} failed ({status}); no snapshot was written")));
    }
    let (id, snapshot) = writer.finish(meta)?;
    Ok(CreateReport { id, snapshot, warnings: Vec::new(), unchanged_files: 0 })
}
