//! Capturing Storage: every bucket with its settings and every object with
//! its metadata, downloaded concurrently and streamed into the snapshot.
//!
//! Layout in the snapshot: `storage/<bucket>/<object path>`; the bucket
//! directory carries the bucket's settings, each file the object's
//! metadata (exact name, content type, cache control, etag, version, user
//! metadata, timestamps, BLAKE3 of the bytes). Path components are escaped
//! (see [`object_path`]); the exact name is always in the attributes.
//!
//! Incremental: an object whose etag, version and size equal those in the
//! newest earlier snapshot of the project is not downloaded again; its data
//! blobs are referenced from that snapshot.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::runtime::Handle;

use super::dbdump::escape_component;
use super::error::{SupabaseError, SupabaseResult};
use super::storage_api::{ApiError, Bucket, Download, Listed, ObjectInfo, StorageClient};
use crate::repo::archiver::{Content, ContentSaver};
use crate::repo::format::tree::{Node, NodeKind};

pub struct StorageOptions {
    pub concurrency: usize,
    pub exclude_buckets: Vec<String>,
    pub allow_partial: bool,
    /// The bucket holding the repository itself, if it lives in this project.
    pub repository_bucket: Option<String>,
}

/// An object captured in an earlier snapshot, as far as reuse needs.
#[derive(Debug, Clone)]
pub struct PreviousObject {
    pub node: Node,
}

impl PreviousObject {
    fn attr(&self, k: &str) -> Option<&Value> {
        self.node.attrs.get(k)
    }
    fn matches(&self, info: &ObjectInfo) -> bool {
        let same = |k: &str, v: &Option<String>| v.is_some() && self.attr(k).and_then(Value::as_str) == v.as_deref();
        same("etag", &info.etag)
            && same("version", &info.version)
            && info.size.is_some()
            && self.attr("size").and_then(Value::as_u64) == info.size
            && self.node.size == info.size.unwrap_or(u64::MAX)
    }
}

/// (bucket id, object name) → what the previous snapshot holds.
pub type PreviousObjects = HashMap<(String, String), PreviousObject>;

#[derive(Debug, Default, Clone, Serialize)]
pub struct BucketManifest {
    #[serde(flatten)]
    pub bucket: Option<Bucket>,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct StorageManifest {
    pub api: String,
    pub buckets: Vec<BucketManifest>,
    /// Buckets not captured, with the reason (excluded, the repository's
    /// own bucket, a type the API cannot list or recreate).
    pub skipped_buckets: Vec<Value>,
    /// Listed, then gone (404) before they could be read.
    pub deleted_during_backup: Vec<String>,
    /// Could not be read (only with --allow-partial).
    pub missing: Vec<Value>,
    pub objects_downloaded: u64,
    pub bytes_downloaded: u64,
    pub objects_reused: u64,
    pub bytes_reused: u64,
    pub retries: u64,
}

/// What the caller adds to the snapshot tree, in order.
pub enum StorageEntry {
    Bucket { path: Vec<String>, node: Node },
    New { path: Vec<String>, node: Node, content: Content },
    Reused { path: Vec<String>, node: Node },
}

/// Receives entries in tree order; returns an error to stop the backup.
pub type EntrySink<'a> = dyn FnMut(StorageEntry) -> SupabaseResult<()> + 'a;

pub trait StorageObserver: Sync {
    fn objects_listed(&self, _bucket: &str, _count: usize) {}
    fn object_done(&self, _bytes: u64, _downloaded: bool) {}
    fn warn(&self, _message: &str) {}
}

/// Tree path of an object: escaped components; a name that is also the
/// folder of other objects ("a" beside "a/b") gets a `%` suffix, which no
/// escaped name can end with.
pub fn object_path(bucket: &str, name: &str, folders: &HashSet<String>) -> Vec<String> {
    let mut path = vec!["storage".to_string(), escape_segment(bucket)];
    let segs: Vec<&str> = name.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        let mut c = escape_segment(seg);
        if i + 1 == segs.len() && folders.contains(name) {
            c.push('%');
        }
        path.push(c);
    }
    path
}

pub fn escape_segment(s: &str) -> String {
    if s.is_empty() {
        "%00".to_string()
    } else if s == ".." {
        "%2E%2E".to_string()
    } else {
        escape_component(s)
    }
}

/// Every proper prefix of every name that is a folder ("a/b/c" → "a", "a/b").
fn folders_of(objects: &[Listed]) -> HashSet<String> {
    let mut set = HashSet::new();
    for o in objects {
        let mut end = 0;
        while let Some(i) = o.name[end..].find('/') {
            end += i;
            set.insert(o.name[..end].to_string());
            end += 1;
        }
    }
    set
}

fn time_ns(s: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s?).ok()?.timestamp_nanos_opt()
}

enum Outcome {
    New(Content, ObjectInfo),
    Reused(Node, ObjectInfo),
    Deleted,
    Failed(String),
}

/// Everything a Storage capture works with.
pub struct Capture<'a> {
    pub handle: &'a Handle,
    pub client: &'a StorageClient,
    pub saver: &'a ContentSaver,
    pub previous: &'a PreviousObjects,
    pub opts: &'a StorageOptions,
    pub observer: &'a dyn StorageObserver,
    /// Modification time for entries the API gives no time for.
    pub capture_ns: i64,
}

pub fn backup_storage(cx: &Capture<'_>, sink: &mut EntrySink<'_>) -> SupabaseResult<StorageManifest> {
    let Capture { handle, client, opts, observer, capture_ns, .. } = *cx;
    let storage_err = |e: ApiError| SupabaseError::Storage(e.to_string());
    let mut manifest = StorageManifest { api: client.base().to_string(), ..Default::default() };
    let mut buckets = handle.block_on(client.list_buckets()).map_err(storage_err)?;
    for x in &opts.exclude_buckets {
        if !buckets.iter().any(|b| &b.id == x || &b.name == x) {
            return Err(SupabaseError::Config(format!("--exclude-bucket {x}: no such bucket")));
        }
    }
    buckets.sort_by_key(|b| escape_segment(&b.id));
    for bucket in buckets {
        let skip_reason = if opts.exclude_buckets.iter().any(|x| x == &bucket.id || x == &bucket.name) {
            Some("excluded with --exclude-bucket".to_string())
        } else if opts.repository_bucket.as_deref() == Some(bucket.id.as_str()) {
            Some("holds this snap repository".to_string())
        } else if bucket.kind.as_deref().is_some_and(|k| k != "STANDARD") {
            Some(format!(
                "{} buckets cannot be listed or recreated through the Storage API; back them up with their own tools",
                bucket.kind.as_deref().unwrap_or_default()
            ))
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            if !reason.starts_with("excluded") {
                observer.warn(&format!("bucket {} is not backed up: {reason}", bucket.id));
            }
            manifest
                .skipped_buckets
                .push(json!({"id": bucket.id, "type": bucket.kind, "reason": reason, "settings": bucket}));
            continue;
        }
        let bucket_path = vec!["storage".to_string(), escape_segment(&bucket.id)];
        let mut node = Node::new(bucket_path[1].as_bytes(), NodeKind::Dir);
        node.mtime_ns = time_ns(bucket.updated_at.as_deref()).unwrap_or(capture_ns);
        node.attrs.insert("bucket".into(), serde_json::to_value(&bucket).expect("bucket serialises"));
        sink(StorageEntry::Bucket { path: bucket_path, node })?;

        let mut listed = handle.block_on(client.list_objects(&bucket.id)).map_err(storage_err)?;
        observer.objects_listed(&bucket.id, listed.len());
        let folders = folders_of(&listed);
        let mut keyed: Vec<(Vec<String>, Listed)> =
            listed.drain(..).map(|l| (object_path(&bucket.id, &l.name, &folders), l)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let stats = capture_bucket(cx, &bucket, keyed, sink, &mut manifest)?;
        manifest.buckets.push(BucketManifest { bucket: Some(bucket), objects: stats.0, bytes: stats.1 });
    }
    manifest.retries = client.retries();
    Ok(manifest)
}

fn capture_bucket(
    cx: &Capture<'_>,
    bucket: &Bucket,
    objects: Vec<(Vec<String>, Listed)>,
    sink: &mut EntrySink<'_>,
    manifest: &mut StorageManifest,
) -> SupabaseResult<(u64, u64)> {
    let Capture { opts, observer, capture_ns, .. } = *cx;
    let workers = opts.concurrency.max(1);
    // Outstanding objects (in flight or finished but not yet added): bounds
    // memory to tickets and metadata, never object bytes.
    let window = workers * 4;
    let next_job = Mutex::new(0usize);
    let done: Mutex<BTreeMap<usize, Outcome>> = Mutex::new(BTreeMap::new());
    let ready = std::sync::Condvar::new();
    let stop = AtomicBool::new(false);
    let emitted = Mutex::new(0usize);
    let slots = std::sync::Condvar::new();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let result: SupabaseResult<()> = std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = {
                    let mut n = next_job.lock().unwrap_or_else(|p| p.into_inner());
                    // Wait for room in the window.
                    let mut e = emitted.lock().unwrap_or_else(|p| p.into_inner());
                    while *n >= *e + window && !stop.load(Ordering::Relaxed) {
                        e = slots.wait(e).unwrap_or_else(|p| p.into_inner());
                    }
                    drop(e);
                    if *n >= objects.len() || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let (_, listed) = &objects[i];
                let outcome = capture_object(cx, &bucket.id, listed, &stop);
                done.lock().unwrap_or_else(|p| p.into_inner()).insert(i, outcome);
                ready.notify_all();
            });
        }
        let res = (|| {
            for (i, (path, listed)) in objects.iter().enumerate() {
                let outcome = {
                    let mut d = done.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if let Some(o) = d.remove(&i) {
                            break o;
                        }
                        d = ready.wait(d).unwrap_or_else(|p| p.into_inner());
                    }
                };
                *emitted.lock().unwrap_or_else(|p| p.into_inner()) = i + 1;
                slots.notify_all();
                let label = format!("{}/{}", bucket.id, listed.name);
                match outcome {
                    Outcome::New(content, info) => {
                        if let Some(expected) = info.size.filter(|s| *s != content.size) {
                            let msg = format!("{label}: read {} bytes, the server reported {expected}", content.size);
                            fail_or_record(opts, manifest, &label, msg)?;
                            continue;
                        }
                        let node = object_node(
                            path,
                            listed,
                            &info,
                            &bucket.id,
                            capture_ns,
                            content.hash.map(|h| h.to_hex().to_string()),
                        );
                        count += 1;
                        bytes += content.size;
                        manifest.objects_downloaded += 1;
                        manifest.bytes_downloaded += content.size;
                        observer.object_done(content.size, true);
                        sink(StorageEntry::New { path: path.clone(), node, content })?;
                    }
                    Outcome::Reused(prev, info) => {
                        let hash = prev.attrs.get("blake3").and_then(Value::as_str).map(String::from);
                        let mut node = object_node(path, listed, &info, &bucket.id, capture_ns, hash);
                        node.content = prev.content.clone();
                        node.size = prev.size;
                        count += 1;
                        bytes += prev.size;
                        manifest.objects_reused += 1;
                        manifest.bytes_reused += prev.size;
                        observer.object_done(prev.size, false);
                        sink(StorageEntry::Reused { path: path.clone(), node })?;
                    }
                    Outcome::Deleted => {
                        observer.warn(&format!("{label} was deleted while the backup ran; it is not in the snapshot"));
                        manifest.deleted_during_backup.push(label);
                    }
                    Outcome::Failed(msg) => fail_or_record(opts, manifest, &label, msg)?,
                }
            }
            Ok(())
        })();
        if res.is_err() {
            stop.store(true, Ordering::Relaxed);
            slots.notify_all();
        }
        res
    });
    result?;
    Ok((count, bytes))
}

fn fail_or_record(
    opts: &StorageOptions,
    manifest: &mut StorageManifest,
    label: &str,
    msg: String,
) -> SupabaseResult<()> {
    if !opts.allow_partial {
        return Err(SupabaseError::Storage(format!("{msg} (use --allow-partial to keep a snapshot without it)")));
    }
    manifest.missing.push(json!({"object": label, "error": msg}));
    Ok(())
}

fn object_node(
    path: &[String],
    listed: &Listed,
    info: &ObjectInfo,
    bucket: &str,
    capture_ns: i64,
    blake3: Option<String>,
) -> Node {
    let mut node = Node::new(path.last().expect("object path").as_bytes(), NodeKind::File);
    node.mtime_ns = time_ns(info.last_modified.as_deref().or(listed.updated_at.as_deref())).unwrap_or(capture_ns);
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            node.attrs.insert(k.to_string(), v);
        }
    };
    put("bucket", json!(bucket));
    put("name", json!(listed.name));
    put("id", json!(info.id));
    put("version", json!(info.version));
    put("size", json!(info.size));
    put("content_type", json!(info.content_type));
    put("cache_control", json!(info.cache_control));
    put("etag", json!(info.etag.as_deref().or(listed.etag.as_deref())));
    put("user_metadata", info.metadata.clone().unwrap_or(Value::Null));
    put("last_modified", json!(info.last_modified));
    put("created_at", json!(info.created_at));
    put("blake3", json!(blake3));
    node
}

fn capture_object(cx: &Capture<'_>, bucket: &str, listed: &Listed, stop: &AtomicBool) -> Outcome {
    let Capture { handle, client, saver, previous, .. } = *cx;
    let info = match handle.block_on(client.object_info(bucket, &listed.name)) {
        Ok(i) => i,
        Err(ApiError::NotFound(_)) => return Outcome::Deleted,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Some(prev) = previous.get(&(bucket.to_string(), listed.name.clone())) {
        if prev.matches(&info) {
            return Outcome::Reused(prev.node.clone(), info);
        }
    }
    let mut reader = DownloadReader {
        handle,
        client,
        bucket,
        name: &listed.name,
        offset: 0,
        expected: info.size,
        current: None,
        pending: Bytes::new(),
        resumes: 0,
        error: None,
        stop,
    };
    let label = format!("{bucket}/{}", listed.name);
    let saved = saver.save(&mut reader, "default", &label, true);
    match (saved, reader.error.take()) {
        (_, Some(ApiError::NotFound(_))) if reader.offset == 0 => Outcome::Deleted,
        (_, Some(e)) => Outcome::Failed(e.to_string()),
        (Err(e), None) => Outcome::Failed(e.to_string()),
        (Ok(content), None) => Outcome::New(content, info),
    }
}

/// An object's bytes as a `Read`, resuming with Range after a dropped
/// connection, up to the client's retry limit.
struct DownloadReader<'a> {
    handle: &'a Handle,
    client: &'a StorageClient,
    bucket: &'a str,
    name: &'a str,
    offset: u64,
    /// Size the server reported: a body that ends short of it was cut.
    expected: Option<u64>,
    current: Option<Download>,
    pending: Bytes,
    resumes: u32,
    error: Option<ApiError>,
    stop: &'a AtomicBool,
}

impl Read for DownloadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                let _ = self.pending.split_to(n);
                self.offset += n as u64;
                return Ok(n);
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("backup stopped"));
            }
            if self.current.is_none() {
                match self.handle.block_on(self.client.download(self.bucket, self.name, self.offset)) {
                    Ok(d) => self.current = Some(d),
                    Err(e) => {
                        self.error = Some(e);
                        return Err(std::io::Error::other("download failed"));
                    }
                }
            }
            let d = self.current.as_mut().expect("download open");
            let next = match self.handle.block_on(d.next_chunk()) {
                Ok(None) if self.expected.is_some_and(|n| self.offset < n) => Err(ApiError::Transient(format!(
                    "{}/{}: body ended at byte {}",
                    self.bucket, self.name, self.offset
                ))),
                other => other,
            };
            match next {
                Ok(Some(b)) => self.pending = b,
                Ok(None) => return Ok(0),
                Err(e) => {
                    self.current = None;
                    self.resumes += 1;
                    self.client.note_retry(&e.to_string());
                    if self.resumes >= self.client.retry_policy().attempts {
                        self.error = Some(e);
                        return Err(std::io::Error::other("download failed"));
                    }
                }
            }
        }
    }
}

/// If the repository is in this project's Storage (its S3 endpoint), the
/// bucket it lives in; that bucket is never backed up into itself.
pub fn repository_bucket(repo_location: &str, storage_url: &str) -> Option<String> {
    let loc = repo_location.strip_prefix("s3:")?;
    let host = url::Url::parse(storage_url).ok()?.host_str()?.to_string();
    let rest = loc.split_once(host.as_str())?.1;
    let rest = rest.split_once("/storage/v1/s3/").map(|(_, r)| r).or_else(|| rest.strip_prefix("/s3/"))?;
    rest.split('/').next().filter(|b| !b.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_safe_and_distinct() {
        let listed: Vec<Listed> = ["a", "a/b", "x//y", "../z", "p%q"]
            .iter()
            .map(|n| Listed { name: n.to_string(), size: None, etag: None, updated_at: None })
            .collect();
        let f = folders_of(&listed);
        assert_eq!(object_path("bk", "a", &f), ["storage", "bk", "a%"]);
        assert_eq!(object_path("bk", "a/b", &f), ["storage", "bk", "a", "b"]);
        assert_eq!(object_path("bk", "x//y", &f), ["storage", "bk", "x", "%00", "y"]);
        assert_eq!(object_path("bk", "../z", &f), ["storage", "bk", "%2E%2E", "z"]);
        assert_eq!(object_path("bk", "p%q", &f), ["storage", "bk", "p%25q"]);
    }

    #[test]
    fn repository_bucket_in_project_storage() {
        let s = "https://abc.supabase.co/storage/v1";
        assert_eq!(
            repository_bucket("s3:https://abc.supabase.co/storage/v1/s3/backups/snap", s).as_deref(),
            Some("backups")
        );
        assert_eq!(repository_bucket("s3:https://other.example/b/p", s), None);
        assert_eq!(repository_bucket("/local/repo", s), None);
    }
}
