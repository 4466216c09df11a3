//! A repository in an S3-compatible bucket (AWS S3, R2, B2, MinIO, the S3
//! endpoint of Supabase Storage…), through opendal.
//!
//! S3 has no rename, but it needs none here: a PUT (or the completion of a
//! multipart upload) makes the whole object visible at once, and every file
//! but `config` and locks is written once under the hash of its contents.
//! Since 2020 AWS S3 lists and reads what a returned PUT wrote; services
//! with weaker guarantees are discussed in docs/FORMAT.md.
//!
//! The engine is synchronous; this backend runs opendal on a small runtime
//! of its own, so it can be called from any thread, including threads that
//! belong to another runtime.

use std::future::Future;
use std::io;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::{Backend, BackendError, BackendResult, FileInfo, FileKind};

/// Objects larger than this are sent as a multipart upload in parts of
/// this size, several parts at once; smaller ones in a single PUT.
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 4;
/// Packs uploaded at the same time by one save pipeline.
const UPLOADS_IN_FLIGHT: usize = 4;

/// Where an `s3:` location points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix with no leading or trailing slash; may be empty.
    pub prefix: String,
    /// `s3://bucket/prefix`: AWS itself, virtual-host addressing.
    pub aws: bool,
}

impl S3Location {
    /// Parse `s3:https://ENDPOINT/BUCKET/PREFIX`, `s3:ENDPOINT/BUCKET/PREFIX`
    /// (https implied) or `s3://BUCKET/PREFIX` (AWS).
    pub fn parse(location: &str) -> Result<S3Location, String> {
        let usage = "use s3:https://ENDPOINT/BUCKET/PREFIX, or s3://BUCKET/PREFIX for AWS";
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("no bucket in the repository location; {usage}"));
            }
            return Ok(S3Location {
                endpoint: String::new(),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
                aws: true,
            });
        }
        let rest = location.strip_prefix("s3:").ok_or_else(|| format!("not an S3 location; {usage}"))?;
        let (scheme, rest) = match rest.split_once("://") {
            Some((s @ ("http" | "https"), r)) => (s, r),
            Some((s, _)) => return Err(format!("unsupported scheme {s:?} for an S3 endpoint; {usage}")),
            None => ("https", rest),
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.contains('@') {
            return Err("credentials do not belong in the repository location: set AWS_ACCESS_KEY_ID and \
                        AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
                .into());
        }
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if host.is_empty() || bucket.is_empty() {
            return Err(format!("no endpoint or bucket in the repository location; {usage}"));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            aws: false,
        })
    }

    pub fn display(&self) -> String {
        let base =
            if self.aws { format!("s3://{}", self.bucket) } else { format!("s3:{}/{}", self.endpoint, self.bucket) };
        if self.prefix.is_empty() {
            base
        } else {
            format!("{base}/{}", self.prefix)
        }
    }
}

pub struct S3Backend {
    location: S3Location,
    op: Operator,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Backend {
    /// Build the client. Credentials and region come from the standard
    /// `AWS_*` variables or the shared config/credentials files (`AWS_PROFILE`).
    /// `SNAP_S3_ADDRESSING=path|virtual` overrides the addressing style
    /// (path style for an explicit endpoint, virtual host for AWS);
    /// `SNAP_S3_RETRIES` the number of retries of a failed request.
    pub fn open(location: &str) -> BackendResult<S3Backend> {
        Self::build(location, None)
    }

    /// Like `open`, with these credentials instead of the environment's.
    pub fn open_with_keys(location: &str, key_id: &str, secret: &str) -> BackendResult<S3Backend> {
        Self::build(location, Some((key_id, secret)))
    }

    fn build(location: &str, keys: Option<(&str, &str)>) -> BackendResult<S3Backend> {
        let loc = S3Location::parse(location).map_err(BackendError::Unsupported)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("snap-s3")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Io { path: loc.display(), source: e })?;
        let region = match env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
            Some(r) => r,
            None if loc.aws => {
                let bucket = loc.bucket.clone();
                runtime.block_on(opendal::services::S3::detect_region("https://s3.amazonaws.com", &bucket)).ok_or_else(
                    || {
                        BackendError::Unsupported(format!(
                            "could not find the region of bucket {bucket}; set AWS_REGION"
                        ))
                    },
                )?
            }
            // Most S3-compatible services accept any region in the signature.
            None => "us-east-1".to_string(),
        };
        let endpoint = if loc.aws { format!("https://s3.{region}.amazonaws.com") } else { loc.endpoint.clone() };
        let virtual_host = match env("SNAP_S3_ADDRESSING").as_deref() {
            Some("virtual") => true,
            Some("path") => false,
            Some(other) => {
                return Err(BackendError::Unsupported(format!("SNAP_S3_ADDRESSING={other:?}: use path or virtual")))
            }
            None => loc.aws,
        };
        // About 25 s of backoff by default before a request is given up.
        let retries = match env("SNAP_S3_RETRIES") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| BackendError::Unsupported(format!("SNAP_S3_RETRIES={n:?} is not a number of retries")))?,
            None => 7,
        };
        let mut builder = opendal::services::S3::default()
            .bucket(&loc.bucket)
            .root(&format!("/{}", loc.prefix))
            .endpoint(&endpoint)
            .region(&region);
        if virtual_host {
            builder = builder.enable_virtual_host_style();
        }
        if let Some((key_id, secret)) = keys {
            builder = builder.access_key_id(key_id).secret_access_key(secret).disable_config_load();
        }
        let op = Operator::new(builder)
            .map_err(|e| map_err(&loc.display(), e))?
            // Throttling (503 SlowDown), 5xx and dropped connections are
            // retried with exponential backoff and jitter; each multipart
            // part is retried on its own.
            .layer(
                RetryLayer::new()
                    .with_max_times(retries)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_jitter(),
            )
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(300)).with_io_timeout(Duration::from_secs(60)))
            .finish();
        Ok(S3Backend { location: loc, op, runtime: Some(runtime) })
    }

    fn key(&self, kind: FileKind, name: &str) -> String {
        match kind {
            FileKind::Config => "config".to_string(),
            FileKind::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
            _ => format!("{}/{name}", kind.dir()),
        }
    }

    /// Run one opendal call to completion on the backend's runtime.
    fn run<T, F>(&self, fut: F) -> opendal::Result<T>
    where
        T: Send + 'static,
        F: Future<Output = opendal::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.as_ref().expect("runtime present until drop").spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| Err(opendal::Error::new(ErrorKind::Unexpected, "S3 request task stopped")))
    }

    fn err(&self, key: &str, e: opendal::Error) -> BackendError {
        map_err(&format!("{}/{key}", self.location.display()), e)
    }

    fn list_keys(&self, dir: &str) -> BackendResult<Vec<FileInfo>> {
        let op = self.op.clone();
        let dir_owned = dir.to_string();
        let entries = self
            .run(async move { op.list_with(&dir_owned).recursive(true).await })
            .or_else(|e| if e.kind() == ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) })
            .map_err(|e| self.err(dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            if entry.metadata().is_dir() || entry.path().ends_with('/') {
                continue;
            }
            let name = entry.name().to_string();
            if name.starts_with('.') {
                continue;
            }
            out.push(FileInfo { name, size: entry.metadata().content_length() });
        }
        Ok(out)
    }
}

fn map_err(path: &str, e: opendal::Error) -> BackendError {
    if e.kind() == ErrorKind::NotFound {
        BackendError::NotFound(path.to_string())
    } else {
        // opendal's message names the operation, the HTTP status and the
        // service's error code; it never holds the credentials.
        BackendError::Io { path: path.to_string(), source: io::Error::other(one_line(&e.to_string())) }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        // Never block here: the last handle may be dropped inside another
        // runtime, where a blocking shutdown would panic.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.display()
    }

    fn create(&self) -> BackendResult<()> {
        // Listing also proves the bucket exists and the credentials work.
        let op = self.op.clone();
        let existing = self
            .run(async move { op.list("").await })
            .map_err(|e| self.err("", e))?
            .into_iter()
            .any(|e| !e.metadata().is_dir() || e.path() != "/");
        if existing {
            return Err(BackendError::Io {
                path: self.location.display(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "this bucket prefix is not empty"),
            });
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> BackendResult<Vec<FileInfo>> {
        let mut out = match kind {
            FileKind::Config => match self.size(kind, "config") {
                Ok(size) => vec![FileInfo { name: "config".into(), size }],
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e),
            },
            _ => self.list_keys(&format!("{}/", kind.dir()))?,
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> BackendResult<Vec<u8>> {
        let key = self.key(kind, name);
        let (op, k) = (self.op.clone(), key.clone());
        self.run(async move { op.read(&k).await.map(|b| b.to_vec()) }).map_err(|e| self.err(&key, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, length: u64) -> BackendResult<Vec<u8>> {
        let key = self.key(kind, name);
        let (op, k) = (self.op.clone(), key.clone());
        let bytes = self
            .run(async move { op.read_with(&k).range(offset..offset + length).await.map(|b| b.to_vec()) })
            .map_err(|e| self.err(&key, e))?;
        if bytes.len() as u64 != length {
            return Err(BackendError::Io {
                path: format!("{}/{key}", self.location.display()),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "object is shorter than expected (truncated?)"),
            });
        }
        Ok(bytes)
    }

    fn size(&self, kind: FileKind, name: &str) -> BackendResult<u64> {
        let key = self.key(kind, name);
        let (op, k) = (self.op.clone(), key.clone());
        self.run(async move { op.stat(&k).await.map(|m| m.content_length()) }).map_err(|e| self.err(&key, e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> BackendResult<()> {
        let key = self.key(kind, name);
        let (op, k) = (self.op.clone(), key.clone());
        // One copy, so the upload task owns its bytes; cheap beside the network.
        let body = bytes::Bytes::copy_from_slice(data);
        self.run(async move { op.write_with(&k, body).chunk(PART_SIZE).concurrent(PARTS_IN_FLIGHT).await.map(|_| ()) })
            .map_err(|e| self.err(&key, e))
    }

    fn delete(&self, kind: FileKind, name: &str) -> BackendResult<()> {
        // S3 answers a DELETE of a missing key with success; the engine
        // wants to know (a second prune of the same pack is a bug to report).
        self.size(kind, name)?;
        let key = self.key(kind, name);
        let (op, k) = (self.op.clone(), key.clone());
        self.run(async move { op.delete(&k).await }).map_err(|e| self.err(&key, e))
    }

    fn parallel_writes(&self) -> usize {
        UPLOADS_IN_FLIGHT
    }

    fn is_remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, FileKind, S3Backend, S3Location};
    use crate::testing::s3_server::S3TestServer;

    #[test]
    fn conformance_on_a_real_s3_server() {
        let server = S3TestServer::start().expect("start the S3 test server (moto)");
        server.create_bucket("conformance").unwrap();
        let location = format!("s3:{}/conformance/some/prefix", server.endpoint());
        let b = S3Backend::open_with_keys(&location, "test-key", "test-secret").unwrap();
        super::super::conformance::run(&b);
        // Packs above one part size go up as multipart uploads.
        let big: Vec<u8> = (0..super::PART_SIZE * 2 + 12345).map(|i| (i * 7 % 251) as u8).collect();
        let name = "cd".repeat(32);
        b.write(FileKind::Pack, &name, &big).unwrap();
        assert_eq!(b.read(FileKind::Pack, &name).unwrap(), big);
        assert_eq!(b.read_range(FileKind::Pack, &name, 9_000_000, 10).unwrap(), &big[9_000_000..9_000_010]);
        // A missing bucket is a clear error, not an empty repository.
        let missing =
            S3Backend::open_with_keys(&format!("s3:{}/no-such-bucket/x", server.endpoint()), "k", "s").unwrap();
        let e = Backend::list(&missing, FileKind::Snapshot).unwrap_err().to_string();
        assert!(e.contains("NoSuchBucket"), "{e}");
    }

    #[test]
    fn parses_locations() {
        let l = S3Location::parse("s3:http://127.0.0.1:9000/bucket/some/prefix/").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:9000");
        assert_eq!((l.bucket.as_str(), l.prefix.as_str(), l.aws), ("bucket", "some/prefix", false));
        assert_eq!(l.display(), "s3:http://127.0.0.1:9000/bucket/some/prefix");
        let l = S3Location::parse("s3:minio.example.com/b").unwrap();
        assert_eq!((l.endpoint.as_str(), l.bucket.as_str(), l.prefix.as_str()), ("https://minio.example.com", "b", ""));
        let l = S3Location::parse("s3://my-bucket/backups").unwrap();
        assert!(l.aws);
        assert_eq!(l.display(), "s3://my-bucket/backups");
        assert!(S3Location::parse("s3://").is_err());
        assert!(S3Location::parse("s3:https://host").is_err());
        assert!(S3Location::parse("s3:ftp://host/b").is_err());
        let e = S3Location::parse("s3:https://AKIA:secret@host/b").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
