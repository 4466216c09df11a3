//! A client of the Supabase Storage API (the routes in
//! ../shared/SUPABASE.md), with retries and streaming downloads.
//!
//! The real status of a failure is often only in the JSON body (HTTP 400
//! with `"statusCode": "404"`), so every error is classified from both.
//! Timeouts, resets, 429 and 5xx are retried with exponential backoff and
//! full jitter; other failures are permanent. A download cut short resumes
//! with a Range request from the byte reached, so a multi-GB object is
//! never fetched twice or held in memory.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RANGE};
use reqwest::{Client, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::one_line;
use super::settings::{redact, Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// STANDARD, ANALYTICS or VECTOR; older servers omit it.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub file_size_limit: Option<u64>,
    #[serde(default)]
    pub allowed_mime_types: Option<Vec<String>>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// An object as listed: full name and the metadata the listing carries.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub updated_at: Option<String>,
}

/// `GET /object/info`: everything the server keeps about an object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectInfo {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    /// User metadata (`x-metadata` at upload).
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub last_modified: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The object or bucket does not exist (any more).
    NotFound(String),
    /// Worth retrying: timeouts, resets, 429, 5xx.
    Transient(String),
    /// Not worth retrying: bad key, bad request, unsupported bucket type.
    Permanent(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::NotFound(m) | ApiError::Transient(m) | ApiError::Permanent(m) => f.write_str(m),
        }
    }
}

pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base: Duration::from_millis(250), max: Duration::from_secs(20) }
    }
}

impl RetryPolicy {
    /// Full jitter: a random wait up to base·2^attempt, capped.
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base.saturating_mul(1 << attempt.min(16)).min(self.max);
        Duration::from_millis(rand::thread_rng().gen_range(0..=cap.as_millis() as u64))
    }
}

/// How long a response may stall before the connection is dropped and the
/// request retried (or the download resumed): `SNAP_HTTP_READ_TIMEOUT`
/// seconds, default 60.
fn read_timeout() -> Duration {
    let secs = std::env::var("SNAP_HTTP_READ_TIMEOUT").ok().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v > 0.0);
    Duration::from_secs_f64(secs.unwrap_or(60.0))
}

pub struct StorageClient {
    http: Client,
    base: String,
    retry: RetryPolicy,
    retries: std::sync::atomic::AtomicU64,
}

/// Percent-encode each segment of an object path, keeping the slashes.
pub fn encode_path(name: &str) -> String {
    name.split('/')
        .map(|seg| {
            let mut out = String::new();
            for b in seg.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Classify an HTTP answer: the status in the JSON body wins over the
/// HTTP status, because the server answers 400 for most failures.
fn classify(status: StatusCode, body: &str, what: &str) -> ApiError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let body_status = match &v["statusCode"] {
        Value::String(s) => s.parse::<u16>().ok(),
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        _ => None,
    };
    let real = body_status.unwrap_or(status.as_u16());
    let message = v["message"].as_str().or(v["error"].as_str()).map(String::from).unwrap_or_else(|| {
        let b = one_line(body);
        b.chars().take(200).collect()
    });
    let text = redact(&format!("{what}: HTTP {real}: {message}"));
    match real {
        404 => ApiError::NotFound(text),
        408 | 429 | 500..=599 => ApiError::Transient(text),
        401 | 403 => {
            ApiError::Permanent(format!("{text} (is SUPABASE_SERVICE_ROLE_KEY the project's service role key?)"))
        }
        _ => ApiError::Permanent(text),
    }
}

/// An unsuccessful answer, classified from its status and body.
async fn failure(resp: reqwest::Response, what: &str) -> ApiError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    classify(status, &text, what)
}

fn transport(e: reqwest::Error, what: &str) -> ApiError {
    // reqwest's messages include the URL, which holds no secret; redact anyway.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    ApiError::Transient(redact(&format!("{what}: {}", one_line(&msg))))
}

impl StorageClient {
    pub fn new(base: &str, key: &Secret) -> Result<StorageClient, ApiError> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ApiError::Permanent("SUPABASE_SERVICE_ROLE_KEY has characters a header cannot hold".into()))?;
        auth.set_sensitive(true);
        let mut apikey = HeaderValue::from_str(key.expose())
            .map_err(|_| ApiError::Permanent("SUPABASE_SERVICE_ROLE_KEY has characters a header cannot hold".into()))?;
        apikey.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert("apikey", apikey);
        let http = Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(read_timeout())
            .user_agent(concat!("snap/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Permanent(format!("HTTP client: {e}")))?;
        Ok(StorageClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            retry: RetryPolicy::default(),
            retries: Default::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    /// Run `op` until it succeeds, fails for good, or the attempts run out,
    /// waiting with backoff and jitter between transient failures.
    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(ApiError::Transient(m)) if attempt + 1 < self.retry.attempts => {
                    self.note_retry(&m);
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Send with retries; returns the body text of a success.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>, what: &str) -> Result<String, ApiError> {
        self.with_retries(|| async {
            let mut req = self.http.request(method.clone(), self.url(path));
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| transport(e, what))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| transport(e, what))?;
            if !status.is_success() {
                return Err(classify(status, &text, what));
            }
            // Some gateways answer 200 with an error body.
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v.get("statusCode").is_some() && v.get("error").is_some() && !v.is_array() {
                return Err(classify(status, &text, what));
            }
            Ok(text)
        })
        .await
    }

    pub async fn list_buckets(&self) -> Result<Vec<Bucket>, ApiError> {
        let text = self.call(Method::GET, "bucket", None, "listing buckets").await?;
        serde_json::from_str(&text).map_err(|e| ApiError::Permanent(format!("listing buckets: unexpected answer: {e}")))
    }

    /// One unretried bucket listing, for a health check: how many buckets
    /// the key sees, and the server's `Date` header (to compare clocks).
    pub async fn probe(&self) -> Result<(usize, Option<String>), ApiError> {
        let what = "listing buckets";
        let resp = self.http.get(self.url("bucket")).send().await.map_err(|e| transport(e, what))?;
        let status = resp.status();
        let date = resp.headers().get(reqwest::header::DATE).and_then(|d| d.to_str().ok()).map(String::from);
        let text = resp.text().await.map_err(|e| transport(e, what))?;
        if !status.is_success() {
            return Err(classify(status, &text, what));
        }
        let buckets: Vec<Bucket> =
            serde_json::from_str(&text).map_err(|_| classify(status, &text, "listing buckets: not a bucket list"))?;
        Ok((buckets.len(), date))
    }

    /// Every object of a bucket, by list-v2's cursor; list v1 (recursive,
    /// by offset) where the server has no list-v2.
    pub async fn list_objects(&self, bucket: &str) -> Result<Vec<Listed>, ApiError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let what = format!("listing bucket {bucket}");
        loop {
            let mut body = json!({"prefix": "", "limit": 1000, "with_delimiter": false});
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let text = match self
                .call(Method::POST, &format!("object/list-v2/{}", encode_path(bucket)), Some(&body), &what)
                .await
            {
                Ok(t) => t,
                // An older server without list-v2 answers 404 ("Route … not
                // found", or "Bucket not found" from its upload route, which
                // takes `list-v2` for a bucket name): list with v1, which
                // says whether the bucket really is missing.
                Err(ApiError::NotFound(_)) if cursor.is_none() => {
                    return self.list_objects_v1(bucket, "").await;
                }
                Err(e) => return Err(e),
            };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| ApiError::Permanent(format!("{what}: unexpected answer: {e}")))?;
            for o in v["objects"].as_array().into_iter().flatten() {
                if let Some(l) = listed(o, "") {
                    out.push(l);
                }
            }
            let next = v["nextCursor"].as_str().map(String::from);
            if !v["hasNext"].as_bool().unwrap_or(false) || next.is_none() || next == cursor {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// List v1 walks one folder level at a time, by offset.
    fn list_objects_v1<'a>(
        &'a self,
        bucket: &'a str,
        prefix: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Listed>, ApiError>> + Send + 'a>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut offset = 0;
            let what = format!("listing bucket {bucket}");
            loop {
                let body = json!({"prefix": prefix, "limit": 1000, "offset": offset,
                                  "sortBy": {"column": "name", "order": "asc"}});
                let text = self
                    .call(Method::POST, &format!("object/list/{}", encode_path(bucket)), Some(&body), &what)
                    .await?;
                let rows: Vec<Value> = serde_json::from_str(&text)
                    .map_err(|e| ApiError::Permanent(format!("{what}: unexpected answer: {e}")))?;
                let n = rows.len();
                for r in &rows {
                    let Some(name) = r["name"].as_str() else { continue };
                    if r["id"].is_null() {
                        let sub = format!("{prefix}{name}/");
                        out.extend(self.list_objects_v1(bucket, &sub).await?);
                    } else if let Some(l) = listed(r, prefix) {
                        out.push(l);
                    }
                }
                if n < 1000 {
                    return Ok(out);
                }
                offset += n;
            }
        })
    }

    pub async fn object_info(&self, bucket: &str, name: &str) -> Result<ObjectInfo, ApiError> {
        let path = format!("object/info/authenticated/{}/{}", encode_path(bucket), encode_path(name));
        let text = self.call(Method::GET, &path, None, &format!("{bucket}/{name}")).await?;
        serde_json::from_str(&text).map_err(|e| ApiError::Permanent(format!("{bucket}/{name}: unexpected info: {e}")))
    }

    /// Start (or resume, from `offset`) a download. The caller pulls the
    /// body with [`Download::next_chunk`].
    pub async fn download(&self, bucket: &str, name: &str, offset: u64) -> Result<Download, ApiError> {
        let what = format!("{bucket}/{name}");
        let path = format!("object/authenticated/{}/{}", encode_path(bucket), encode_path(name));
        self.with_retries(|| async {
            let mut req = self.http.get(self.url(&path));
            if offset > 0 {
                req = req.header(RANGE, format!("bytes={offset}-"));
            }
            let resp = req.send().await.map_err(|e| transport(e, &what))?;
            if !resp.status().is_success() {
                return Err(failure(resp, &what).await);
            }
            // A server that ignores Range sends everything again: skip what we have.
            let skip = if offset > 0 && resp.status() != StatusCode::PARTIAL_CONTENT { offset } else { 0 };
            Ok(Download { resp, skip })
        })
        .await
    }

    /// The API base URL (holds no secret).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Create the bucket, or update its settings if it exists.
    pub async fn put_bucket(&self, b: &Value) -> Result<(), ApiError> {
        let id = b["id"].as_str().ok_or_else(|| ApiError::Permanent("bucket without id".into()))?;
        let body = json!({
            "id": id,
            "name": b["name"].as_str().unwrap_or(id),
            "public": b["public"].as_bool().unwrap_or(false),
            "file_size_limit": b["file_size_limit"],
            "allowed_mime_types": b["allowed_mime_types"],
        });
        let what = format!("bucket {id}");
        match self.call(Method::GET, &format!("bucket/{}", encode_path(id)), None, &what).await {
            Ok(_) => {
                self.call(Method::PUT, &format!("bucket/{}", encode_path(id)), Some(&body), &what).await.map(|_| ())
            }
            Err(ApiError::NotFound(_)) => self.call(Method::POST, "bucket", Some(&body), &what).await.map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Upload (create or replace) an object. `body` is called for each
    /// attempt and streams the bytes, so nothing is held in memory.
    pub async fn upload<F, S>(&self, bucket: &str, name: &str, meta: &UploadMeta, body: F) -> Result<(), ApiError>
    where
        F: Fn() -> S,
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let what = format!("{bucket}/{name}");
        let path = format!("object/{}/{}", encode_path(bucket), encode_path(name));
        self.with_retries(|| async {
            let mut req = self
                .http
                .post(self.url(&path))
                .header("x-upsert", "true")
                .header(reqwest::header::CONTENT_LENGTH, meta.size)
                .body(reqwest::Body::wrap_stream(body()));
            if let Some(ct) = &meta.content_type {
                req = req.header(reqwest::header::CONTENT_TYPE, ct);
            }
            if let Some(cc) = &meta.cache_control {
                req = req.header(reqwest::header::CACHE_CONTROL, cc);
            }
            if let Some(m) = meta.user_metadata.as_ref().filter(|m| !m.is_null()) {
                use base64::Engine;
                req = req.header("x-metadata", base64::engine::general_purpose::STANDARD.encode(m.to_string()));
            }
            let resp = req.send().await.map_err(|e| transport(e, &what))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(failure(resp, &what).await)
            }
        })
        .await
    }

    /// Upload through the server's resumable (TUS) endpoint in 6 MiB
    /// chunks, the size Supabase requires: a dropped connection costs at
    /// most one chunk, which is resent from the offset the server reports.
    /// Returns `Ok(false)` when the server has no resumable endpoint.
    pub async fn upload_resumable<S>(
        &self,
        bucket: &str,
        name: &str,
        meta: &UploadMeta,
        body: S,
    ) -> Result<bool, ApiError>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        use base64::Engine;
        use futures_util::StreamExt;
        let what = format!("{bucket}/{name}");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut metadata = vec![format!("bucketName {}", b64(bucket)), format!("objectName {}", b64(name))];
        if let Some(ct) = &meta.content_type {
            metadata.push(format!("contentType {}", b64(ct)));
        }
        if let Some(cc) = &meta.cache_control {
            metadata.push(format!("cacheControl {}", b64(cc)));
        }
        if let Some(m) = meta.user_metadata.as_ref().filter(|m| !m.is_null()) {
            metadata.push(format!("metadata {}", b64(&m.to_string())));
        }
        let location = self
            .with_retries(|| async {
                let resp = self
                    .http
                    .post(self.url("upload/resumable"))
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Length", meta.size)
                    .header("Upload-Metadata", metadata.join(","))
                    .header("x-upsert", "true")
                    .send()
                    .await
                    .map_err(|e| transport(e, &what))?;
                match resp.status() {
                    StatusCode::CREATED => resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .map(|l| Some(l.to_string()))
                        .ok_or_else(|| ApiError::Permanent(format!("{what}: resumable upload without a Location"))),
                    StatusCode::NOT_FOUND => Ok(None),
                    _ => Err(failure(resp, &what).await),
                }
            })
            .await?;
        let Some(location) = location else { return Ok(false) };
        // Relative locations are resolved against the API base.
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{}", self.base.trim_end_matches("/storage/v1"), location)
        };
        let mut body = Box::pin(body);
        let mut offset: u64 = 0;
        let mut chunk: Vec<u8> = Vec::with_capacity(TUS_CHUNK);
        let mut ended = false;
        while offset < meta.size || (meta.size == 0 && offset == 0 && !ended) {
            // Fill one chunk (the last may be short).
            while chunk.len() < TUS_CHUNK && !ended {
                match body.next().await {
                    Some(Ok(b)) => chunk.extend_from_slice(&b),
                    Some(Err(e)) => return Err(ApiError::Permanent(format!("{what}: reading the snapshot: {e}"))),
                    None => ended = true,
                }
            }
            let take = chunk.len().min(TUS_CHUNK);
            let piece: Vec<u8> = chunk.drain(..take).collect();
            let mut sent = 0usize;
            let mut attempt = 0;
            while sent < piece.len() || piece.is_empty() {
                let res = self
                    .http
                    .patch(&location)
                    .header("Tus-Resumable", "1.0.0")
                    .header("Upload-Offset", offset + sent as u64)
                    .header(reqwest::header::CONTENT_TYPE, "application/offset+octet-stream")
                    .body(piece[sent..].to_vec())
                    .send()
                    .await;
                let error = match res {
                    Ok(resp) if resp.status().is_success() => {
                        sent = piece.len();
                        if piece.is_empty() {
                            return Ok(true);
                        }
                        continue;
                    }
                    Ok(resp) => failure(resp, &what).await,
                    Err(e) => transport(e, &what),
                };
                match error {
                    ApiError::Transient(m) if attempt + 1 < self.retry.attempts => {
                        self.note_retry(&m);
                        tokio::time::sleep(self.retry.delay(attempt)).await;
                        attempt += 1;
                        // Ask where the server stands, and resend from there.
                        if let Ok(head) = self.http.head(&location).header("Tus-Resumable", "1.0.0").send().await {
                            if let Some(o) =
                                head.headers().get("Upload-Offset").and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                            {
                                if o >= offset && o <= offset + piece.len() as u64 {
                                    sent = (o - offset) as usize;
                                }
                            }
                        }
                    }
                    e => return Err(e),
                }
            }
            offset += piece.len() as u64;
        }
        Ok(true)
    }

    /// Delete objects by exact name, 1000 a request (the API's limit).
    pub async fn delete_objects(&self, bucket: &str, names: &[String]) -> Result<(), ApiError> {
        for batch in names.chunks(1000) {
            let body = json!({"prefixes": batch});
            self.call(
                Method::DELETE,
                &format!("object/{}", encode_path(bucket)),
                Some(&body),
                &format!("deleting from {bucket}"),
            )
            .await?;
        }
        Ok(())
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Counted, not printed: a flaky network must not flood a cron job's
    /// mail; the total is reported at the end.
    pub fn note_retry(&self, _message: &str) {
        self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn listed(o: &Value, prefix: &str) -> Option<Listed> {
    let name = o["name"].as_str()?;
    let meta = &o["metadata"];
    Some(Listed {
        name: format!("{prefix}{name}"),
        size: meta["size"].as_u64().or(meta["contentLength"].as_u64()),
        etag: meta["eTag"].as_str().map(|e| e.trim_matches('"').to_string()),
        updated_at: o["updated_at"].as_str().map(String::from),
    })
}

/// Chunk size of resumable uploads (Supabase requires 6 MiB).
pub const TUS_CHUNK: usize = 6 << 20;

/// What an upload sends besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    pub size: u64,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub user_metadata: Option<Value>,
}

pub struct Download {
    resp: reqwest::Response,
    skip: u64,
}

impl Download {
    /// The next piece of the body; `Ok(None)` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            match self.resp.chunk().await {
                Ok(Some(mut b)) => {
                    if self.skip > 0 {
                        let n = (self.skip as usize).min(b.len());
                        self.skip -= n as u64;
                        let _ = b.split_to(n);
                        if b.is_empty() {
                            continue;
                        }
                    }
                    return Ok(Some(b));
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(transport(e, "download interrupted")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_body_status() {
        let e = classify(
            StatusCode::BAD_REQUEST,
            r#"{"statusCode":"404","error":"not_found","message":"Object not found"}"#,
            "x",
        );
        assert!(matches!(e, ApiError::NotFound(_)));
        let e = classify(StatusCode::BAD_REQUEST, r#"{"statusCode":"503","error":"x","message":"busy"}"#, "x");
        assert!(matches!(e, ApiError::Transient(_)));
        let e = classify(
            StatusCode::BAD_REQUEST,
            r#"{"statusCode":"403","error":"Unauthorized","message":"invalid signature"}"#,
            "x",
        );
        assert!(matches!(e, ApiError::Permanent(_)));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, "slow down", "x"), ApiError::Transient(_)));
        assert_eq!(encode_path("a b/c%d/é"), "a%20b/c%25d/%C3%A9");
    }
}
