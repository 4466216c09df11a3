//! A Storage API server for tests and the demo project, following the real
//! Supabase Storage server's routes and quirks (../shared/SUPABASE.md):
//! errors are HTTP 400 with the real status in the JSON body, list-v2 walks
//! keys with a cursor, downloads honour Range, uploads take `x-upsert`,
//! `x-metadata` (base64 JSON) and `Cache-Control`. Objects live on disk.
//!
//! Faults can be injected per route kind to prove clients' retries: a list
//! of `kind:fault` items consumed in order, e.g.
//! `download:503,download:reset,list:429,info:500,download:slow`; the item
//! `no-list-v2` makes it answer like an older server without list-v2.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bucket {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub public: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub file_size_limit: Option<u64>,
    pub allowed_mime_types: Option<Vec<String>>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Object {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub content_type: String,
    pub cache_control: String,
    pub etag: String,
    pub user_metadata: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
    /// File under the server's root holding the bytes.
    pub file: String,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    /// bucket id → object name → object.
    objects: BTreeMap<String, BTreeMap<String, Object>>,
}

/// A TUS upload: where its bytes go and what to store them as.
struct PendingUpload {
    bucket: String,
    name: String,
    length: u64,
    content_type: String,
    cache_control: String,
    user_metadata: Option<Value>,
    upsert: bool,
    data: Vec<u8>,
}

/// TUS `Upload-Metadata`: `key base64,key base64`.
fn tus_metadata(h: &str) -> HashMap<String, String> {
    h.split(',')
        .filter_map(|kv| {
            let mut it = kv.trim().splitn(2, ' ');
            let k = it.next()?.to_string();
            let v = it
                .next()
                .map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap_or_default())
                .unwrap_or_default();
            Some((k, String::from_utf8_lossy(&v).into_owned()))
        })
        .collect()
}

fn tus_response(status: u16, headers: &[(&str, String)]) -> Response<Cursor<Vec<u8>>> {
    let mut r = Response::from_data(Vec::new()).with_status_code(StatusCode(status));
    r.add_header(Header::from_bytes("Tus-Resumable", "1.0.0").expect("header"));
    for (k, v) in headers {
        r.add_header(Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("header"));
    }
    r
}

#[derive(Debug, Clone, PartialEq)]
enum Fault {
    Status(u16),
    /// Close the connection half way through the body.
    Reset,
    /// Answer after a delay.
    Slow(Duration),
}

pub struct StorageServer {
    root: PathBuf,
    key: String,
    state: Mutex<State>,
    faults: Mutex<HashMap<String, VecDeque<Fault>>>,
    /// Behave like an older server without the list-v2 route.
    no_list_v2: bool,
    /// Resumable (TUS) uploads in progress, by id.
    uploads: Mutex<HashMap<String, PendingUpload>>,
    counter: std::sync::atomic::AtomicU64,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("random");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A Storage-style error: HTTP 400 (as the real server answers most
/// failures), the real status in the body.
fn error(status: u16, error: &str, message: &str) -> Response<Cursor<Vec<u8>>> {
    let code = match status {
        404 => "NoSuchKey",
        409 => "KeyAlreadyExists",
        403 => "AccessDenied",
        415 => "InvalidMimeType",
        _ => "InvalidRequest",
    };
    json_response(400, &json!({"statusCode": status.to_string(), "error": error, "code": code, "message": message}))
}

fn json_response(status: u16, v: &Value) -> Response<Cursor<Vec<u8>>> {
    Response::from_data(serde_json::to_vec(v).expect("json"))
        .with_status_code(StatusCode(status))
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("header"))
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reader that fails after `limit` bytes, to cut a response short.
struct Truncated<R> {
    inner: R,
    left: usize,
}

impl<R: Read> Read for Truncated<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset"));
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        self.left -= n;
        Ok(n)
    }
}

impl StorageServer {
    /// Open (or create) a server's state under `root`.
    pub fn open(root: &Path, key: &str, faults: &str) -> std::io::Result<Arc<StorageServer>> {
        std::fs::create_dir_all(root.join("files"))?;
        let state = match std::fs::read(root.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(_) => State::default(),
        };
        let mut map: HashMap<String, VecDeque<Fault>> = HashMap::new();
        let mut no_list_v2 = false;
        for item in faults.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "no-list-v2" {
                no_list_v2 = true;
                continue;
            }
            let (kind, f) = item.split_once(':').ok_or_else(|| std::io::Error::other(format!("bad fault {item}")))?;
            let fault = match f {
                "reset" => Fault::Reset,
                "slow" => Fault::Slow(Duration::from_millis(1500)),
                n => Fault::Status(n.parse().map_err(|_| std::io::Error::other(format!("bad fault {item}")))?),
            };
            map.entry(kind.to_string()).or_default().push_back(fault);
        }
        Ok(Arc::new(StorageServer {
            root: root.to_path_buf(),
            key: key.to_string(),
            state: Mutex::new(state),
            faults: Mutex::new(map),
            no_list_v2,
            uploads: Mutex::new(HashMap::new()),
            counter: Default::default(),
        }))
    }

    /// Serve on `listener` with `threads` workers until the process ends.
    pub fn serve(self: &Arc<Self>, server: Server, threads: usize) {
        let server = Arc::new(server);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let server = server.clone();
                let me = self.clone();
                std::thread::spawn(move || {
                    while let Ok(req) = server.recv() {
                        me.handle(req);
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &State) {
        let tmp = self.root.join("state.json.tmp");
        if std::fs::write(&tmp, serde_json::to_vec(state).expect("state")).is_ok() {
            let _ = std::fs::rename(tmp, self.root.join("state.json"));
        }
    }

    fn take_fault(&self, kind: &str) -> Option<Fault> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).get_mut(kind).and_then(|q| q.pop_front())
    }

    fn handle(&self, mut req: Request) {
        let url = req.url().to_string();
        let (path, _query) = url.split_once('?').unwrap_or((&url, ""));
        let path = path.trim_start_matches('/').to_string();
        let method = req.method().clone();
        let kind = route_kind(&method, &path);
        if let Some(f) = self.take_fault(kind) {
            match f {
                Fault::Status(s) => {
                    let body = json!({"statusCode": s.to_string(), "error": "Injected", "message": "injected fault"});
                    // Gateways answer 429/5xx for real; the server itself says it in the body.
                    let _ = req.respond(json_response(s, &body));
                    return;
                }
                Fault::Slow(d) => std::thread::sleep(d),
                Fault::Reset => {
                    if kind != "download" {
                        // Drop the request unanswered: the client sees a closed connection.
                        drop(req.into_writer());
                        return;
                    }
                    return self.download(req, &path, true);
                }
            }
        }
        let auth_ok = header(&req, "authorization").as_deref() == Some(&format!("Bearer {}", self.key))
            && header(&req, "apikey").as_deref() == Some(self.key.as_str());
        if !auth_ok {
            let _ = req.respond(error(403, "Unauthorized", "invalid signature"));
            return;
        }
        let mut body = Vec::new();
        if req.as_reader().read_to_end(&mut body).is_err() {
            let _ = req.respond(error(400, "InvalidRequest", "cannot read body"));
            return;
        }
        let parts: Vec<&str> = path.splitn(3, '/').collect();
        let resp = match (&method, parts.as_slice()) {
            (Method::Get, ["bucket"]) => {
                let st = self.lock();
                json_response(200, &json!(st.buckets.values().collect::<Vec<_>>()))
            }
            (Method::Get, ["bucket", id]) => match self.lock().buckets.get(*id) {
                Some(b) => json_response(200, &json!(b)),
                None => error(404, "Bucket not found", "Bucket not found"),
            },
            (Method::Post, ["bucket"]) => self.create_bucket(&body),
            (Method::Put, ["bucket", id]) => self.update_bucket(id, &body),
            (Method::Delete, ["bucket", id]) => {
                let mut st = self.lock();
                if st.objects.get(*id).is_some_and(|o| !o.is_empty()) {
                    error(409, "Bucket not empty", "The bucket you tried to delete is not empty")
                } else if st.buckets.remove(*id).is_some() {
                    st.objects.remove(*id);
                    self.persist(&st);
                    json_response(200, &json!({"message": "Successfully deleted"}))
                } else {
                    error(404, "Bucket not found", "Bucket not found")
                }
            }
            (Method::Post, ["bucket", rest]) if rest.ends_with("/empty") => {
                let id = rest.trim_end_matches("/empty");
                let mut st = self.lock();
                if let Some(objs) = st.objects.get_mut(id) {
                    objs.clear();
                }
                self.persist(&st);
                json_response(200, &json!({"message": "Successfully emptied"}))
            }
            (Method::Post, ["object", "list-v2", bucket]) if !self.no_list_v2 => {
                self.list_v2(&percent_decode(bucket), &body)
            }
            (Method::Post, ["object", "list", bucket]) => self.list_v1(&percent_decode(bucket), &body),
            (Method::Get, ["object", "info", rest]) => {
                let rest = rest.strip_prefix("authenticated/").or_else(|| rest.strip_prefix("public/")).unwrap_or(rest);
                match self.find(rest) {
                    Some(o) => json_response(
                        200,
                        &json!({"id": o.id, "name": o.name, "version": o.version, "size": o.size,
                            "content_type": o.content_type, "cache_control": o.cache_control, "etag": o.etag,
                            "metadata": o.user_metadata, "last_modified": o.updated_at, "created_at": o.created_at}),
                    ),
                    None => error(404, "not_found", "Object not found"),
                }
            }
            (Method::Get | Method::Head, ["object", ..]) => return self.download(req, &path, false),
            (Method::Post | Method::Put, ["object", bucket, name]) => {
                let upsert = method == Method::Put || header(&req, "x-upsert").as_deref() == Some("true");
                self.upload(&req, &percent_decode(bucket), &percent_decode(name), body, upsert)
            }
            (Method::Post, ["upload", "resumable"]) => self.tus_create(&req),
            (Method::Patch, ["upload", "resumable", id]) => self.tus_patch(&req, id, body),
            (Method::Head, ["upload", "resumable", id]) => {
                match self.uploads.lock().unwrap_or_else(|p| p.into_inner()).get(*id) {
                    Some(u) => tus_response(
                        200,
                        &[("Upload-Offset", u.data.len().to_string()), ("Upload-Length", u.length.to_string())],
                    ),
                    None => tus_response(404, &[]),
                }
            }
            (Method::Delete, ["object", bucket]) => self.delete_many(&percent_decode(bucket), &body),
            (Method::Delete, ["object", bucket, name]) => {
                let mut st = self.lock();
                let removed = st.objects.get_mut(&percent_decode(bucket)).and_then(|o| o.remove(&percent_decode(name)));
                self.persist(&st);
                match removed {
                    Some(_) => json_response(200, &json!({"message": "Successfully deleted"})),
                    None => error(404, "not_found", "Object not found"),
                }
            }
            _ => json_response(
                404,
                &json!({"message": format!("Route {method}:/{path} not found"), "error": "Not Found", "statusCode": 404}),
            ),
        };
        let _ = req.respond(resp);
    }

    fn create_bucket(&self, body: &[u8]) -> Response<Cursor<Vec<u8>>> {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let Some(name) = v["name"].as_str().map(String::from) else {
            return error(400, "InvalidRequest", "body must have required property 'name'");
        };
        let id = v["id"].as_str().map(String::from).unwrap_or_else(|| name.clone());
        let mut st = self.lock();
        if st.buckets.contains_key(&id) {
            return error(409, "Duplicate", "The resource already exists");
        }
        let t = now();
        st.buckets.insert(
            id.clone(),
            Bucket {
                id: id.clone(),
                name,
                owner: None,
                public: v["public"].as_bool().unwrap_or(false),
                kind: v["type"].as_str().unwrap_or("STANDARD").to_string(),
                file_size_limit: v["file_size_limit"].as_u64(),
                allowed_mime_types: serde_json::from_value(v["allowed_mime_types"].clone()).ok().flatten(),
                created_at: t.clone(),
                updated_at: t,
            },
        );
        self.persist(&st);
        json_response(200, &json!({"name": id}))
    }

    fn update_bucket(&self, id: &str, body: &[u8]) -> Response<Cursor<Vec<u8>>> {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut st = self.lock();
        let Some(b) = st.buckets.get_mut(id) else { return error(404, "Bucket not found", "Bucket not found") };
        if let Some(p) = v["public"].as_bool() {
            b.public = p;
        }
        if !v["file_size_limit"].is_null() {
            b.file_size_limit = v["file_size_limit"].as_u64();
        }
        if !v["allowed_mime_types"].is_null() {
            b.allowed_mime_types = serde_json::from_value(v["allowed_mime_types"].clone()).ok().flatten();
        }
        b.updated_at = now();
        self.persist(&st);
        json_response(200, &json!({"message": "Successfully updated"}))
    }

    fn find(&self, bucket_and_name: &str) -> Option<Object> {
        let (bucket, name) = bucket_and_name.split_once('/')?;
        self.lock().objects.get(&percent_decode(bucket))?.get(&percent_decode(name)).cloned()
    }

    fn list_entry(o: &Object) -> Value {
        json!({"id": o.id, "name": o.name, "updated_at": o.updated_at, "created_at": o.created_at,
               "last_accessed_at": o.updated_at,
               "metadata": {"eTag": o.etag, "size": o.size, "mimetype": o.content_type, "cacheControl": o.cache_control,
                            "lastModified": o.updated_at, "contentLength": o.size, "httpStatusCode": 200}})
    }

    fn list_v2(&self, bucket: &str, body: &[u8]) -> Response<Cursor<Vec<u8>>> {
        let v: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let st = self.lock();
        let Some(b) = st.buckets.get(bucket) else { return error(404, "Bucket not found", "Bucket not found") };
        if b.kind != "STANDARD" {
            return error(400, "InvalidRequest", "This operation is not supported for this bucket type");
        }
        let prefix = v["prefix"].as_str().unwrap_or("");
        let limit = v["limit"].as_u64().unwrap_or(1000).clamp(1, 1000) as usize;
        let cursor = v["cursor"].as_str().map(|c| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(c).unwrap_or_default())
                .unwrap_or_default()
        });
        let delimiter = v["with_delimiter"].as_bool().unwrap_or(false);
        let empty = BTreeMap::new();
        let objs = st.objects.get(bucket).unwrap_or(&empty);
        let mut folders: Vec<Value> = Vec::new();
        let mut objects: Vec<Value> = Vec::new();
        let mut last_key = None;
        let mut has_next = false;
        let mut seen_folders = std::collections::BTreeSet::new();
        for (name, o) in objs.range(cursor.clone().unwrap_or_default()..) {
            if cursor.as_deref() == Some(name.as_str()) || !name.starts_with(prefix) {
                continue;
            }
            if objects.len() + folders.len() >= limit {
                has_next = true;
                break;
            }
            let rest = &name[prefix.len()..];
            if delimiter {
                if let Some((folder, _)) = rest.split_once('/') {
                    let full = format!("{prefix}{folder}/");
                    if seen_folders.insert(full.clone()) {
                        folders.push(json!({"name": full, "key": full}));
                    }
                    last_key = Some(name.clone());
                    continue;
                }
            }
            objects.push(Self::list_entry(o));
            last_key = Some(name.clone());
        }
        let next = if has_next { last_key.map(|k| base64::engine::general_purpose::STANDARD.encode(k)) } else { None };
        json_response(200, &json!({"hasNext": has_next, "nextCursor": next, "folders": folders, "objects": objects}))
    }

    fn list_v1(&self, bucket: &str, body: &[u8]) -> Response<Cursor<Vec<u8>>> {
        let v: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let Some(prefix) = v["prefix"].as_str() else {
            return error(400, "InvalidRequest", "body must have required property 'prefix'");
        };
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
        let limit = v["limit"].as_u64().unwrap_or(100).clamp(1, 1500) as usize;
        let offset = v["offset"].as_u64().unwrap_or(0) as usize;
        let st = self.lock();
        if !st.buckets.contains_key(bucket) {
            return error(404, "Bucket not found", "Bucket not found");
        }
        let empty = BTreeMap::new();
        // Keyed by (name, is_file): a folder "a" and an object "a" are both listed.
        let mut rows: BTreeMap<(String, bool), Value> = BTreeMap::new();
        for (name, o) in st.objects.get(bucket).unwrap_or(&empty) {
            let Some(rest) = name.strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                Some((folder, _)) => {
                    rows.entry((folder.to_string(), false)).or_insert_with(|| {
                        json!({"name": folder, "id": null, "updated_at": null, "created_at": null, "metadata": null})
                    });
                }
                None => {
                    let mut e = Self::list_entry(o);
                    e["name"] = json!(rest);
                    rows.insert((rest.to_string(), true), e);
                }
            }
        }
        json_response(200, &Value::Array(rows.into_values().skip(offset).take(limit).collect()))
    }

    fn download(&self, req: Request, path: &str, reset: bool) {
        let rest = path.trim_start_matches("object/");
        let rest = rest.strip_prefix("authenticated/").or_else(|| rest.strip_prefix("public/")).unwrap_or(rest);
        let Some(o) = self.find(rest) else {
            let _ = req.respond(error(404, "not_found", "Object not found"));
            return;
        };
        let Ok(mut file) = std::fs::File::open(self.root.join(&o.file)) else {
            let _ = req.respond(error(500, "InternalError", "cannot read object"));
            return;
        };
        let mut start = 0u64;
        let mut status = 200;
        if let Some(r) = header(&req, "range").and_then(|r| r.strip_prefix("bytes=").map(String::from)) {
            if let Some(Ok(s)) = r.split('-').next().map(str::parse::<u64>) {
                if s < o.size {
                    start = s;
                    status = 206;
                }
            }
        }
        use std::io::Seek;
        let _ = file.seek(std::io::SeekFrom::Start(start));
        let len = (o.size - start) as usize;
        let mut headers = vec![
            Header::from_bytes("Content-Type", o.content_type.as_bytes()).expect("header"),
            Header::from_bytes("Cache-Control", o.cache_control.as_bytes()).expect("header"),
            Header::from_bytes("ETag", format!("\"{}\"", o.etag).as_bytes()).expect("header"),
            Header::from_bytes("Accept-Ranges", "bytes").expect("header"),
        ];
        if status == 206 {
            headers.push(
                Header::from_bytes("Content-Range", format!("bytes {start}-{}/{}", o.size - 1, o.size).as_bytes())
                    .expect("header"),
            );
        }
        if *req.method() == Method::Head {
            let _ = req.respond(Response::new(StatusCode(status), headers, std::io::empty(), Some(len), None));
            return;
        }
        let res = if reset {
            let reader = Truncated { inner: file, left: len / 2 };
            req.respond(Response::new(StatusCode(status), headers, reader, Some(len), None))
        } else {
            req.respond(Response::new(StatusCode(status), headers, file, Some(len), None))
        };
        let _ = res;
    }

    fn upload(
        &self,
        req: &Request,
        bucket: &str,
        name: &str,
        body: Vec<u8>,
        upsert: bool,
    ) -> Response<Cursor<Vec<u8>>> {
        let content_type = header(req, "content-type").unwrap_or_else(|| "text/plain;charset=UTF-8".into());
        let cache_control = header(req, "cache-control").unwrap_or_else(|| "no-cache".into());
        let user_metadata = match header(req, "x-metadata") {
            Some(m) => match base64::engine::general_purpose::STANDARD
                .decode(m)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(v) => Some(v),
                None => return error(400, "InvalidRequest", "x-metadata must be base64-encoded JSON"),
            },
            None => None,
        };
        self.store(bucket, name, body, content_type, cache_control, user_metadata, upsert)
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        bucket: &str,
        name: &str,
        body: Vec<u8>,
        content_type: String,
        cache_control: String,
        user_metadata: Option<Value>,
        upsert: bool,
    ) -> Response<Cursor<Vec<u8>>> {
        let mut st = self.lock();
        let Some(b) = st.buckets.get(bucket).cloned() else {
            return error(404, "Bucket not found", "Bucket not found");
        };
        if let Some(limit) = b.file_size_limit {
            if body.len() as u64 > limit {
                return error(413, "Payload too large", "The object exceeded the maximum allowed size");
            }
        }
        if let Some(types) = &b.allowed_mime_types {
            if !types.is_empty()
                && !types.iter().any(|t| {
                    t == &content_type || t.ends_with("/*") && content_type.starts_with(t.trim_end_matches('*'))
                })
            {
                return error(415, "invalid_mime_type", &format!("mime type {content_type} is not supported"));
            }
        }
        let existing = st.objects.get(bucket).and_then(|o| o.get(name)).cloned();
        if existing.is_some() && !upsert {
            return error(409, "Duplicate", "The resource already exists");
        }
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = format!("files/{}-{n}", new_id());
        if std::fs::write(self.root.join(&file), &body).is_err() {
            return error(500, "InternalError", "cannot store object");
        }
        let t = now();
        let digest = blake3::hash(&body).to_hex();
        let obj = Object {
            id: existing.as_ref().map(|e| e.id.clone()).unwrap_or_else(new_id),
            name: name.to_string(),
            version: new_id(),
            size: body.len() as u64,
            content_type,
            cache_control,
            etag: digest[..32].to_string(),
            user_metadata,
            created_at: existing.as_ref().map(|e| e.created_at.clone()).unwrap_or_else(|| t.clone()),
            updated_at: t,
            file,
        };
        if let Some(old) = existing {
            let _ = std::fs::remove_file(self.root.join(old.file));
        }
        let id = obj.id.clone();
        st.objects.entry(bucket.to_string()).or_default().insert(name.to_string(), obj);
        self.persist(&st);
        json_response(200, &json!({"Key": format!("{bucket}/{name}"), "Id": id}))
    }

    /// TUS creation: `Upload-Length` and `Upload-Metadata` (bucketName,
    /// objectName, contentType, cacheControl, metadata).
    fn tus_create(&self, req: &Request) -> Response<Cursor<Vec<u8>>> {
        let Some(length) = header(req, "upload-length").and_then(|l| l.parse().ok()) else {
            return tus_response(400, &[]);
        };
        let meta = tus_metadata(&header(req, "upload-metadata").unwrap_or_default());
        let (Some(bucket), Some(name)) = (meta.get("bucketName"), meta.get("objectName")) else {
            return error(400, "InvalidRequest", "bucketName and objectName are required");
        };
        if !self.lock().buckets.contains_key(bucket) {
            return error(404, "Bucket not found", "Bucket not found");
        }
        let id = new_id();
        let upload = PendingUpload {
            bucket: bucket.clone(),
            name: name.clone(),
            length,
            content_type: meta.get("contentType").cloned().unwrap_or_else(|| "application/octet-stream".into()),
            cache_control: meta.get("cacheControl").cloned().unwrap_or_else(|| "no-cache".into()),
            user_metadata: meta.get("metadata").and_then(|m| serde_json::from_str(m).ok()),
            upsert: header(req, "x-upsert").as_deref() == Some("true"),
            data: Vec::new(),
        };
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), upload);
        let host = header(req, "host").unwrap_or_else(|| "127.0.0.1".into());
        tus_response(201, &[("Location", format!("http://{host}/upload/resumable/{id}"))])
    }

    /// TUS append at `Upload-Offset`; the last chunk stores the object.
    fn tus_patch(&self, req: &Request, id: &str, body: Vec<u8>) -> Response<Cursor<Vec<u8>>> {
        let offset: Option<usize> = header(req, "upload-offset").and_then(|o| o.parse().ok());
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let Some(u) = uploads.get_mut(id) else { return tus_response(404, &[]) };
        if offset != Some(u.data.len()) {
            return tus_response(409, &[("Upload-Offset", u.data.len().to_string())]);
        }
        u.data.extend_from_slice(&body);
        if (u.data.len() as u64) < u.length {
            return tus_response(204, &[("Upload-Offset", u.data.len().to_string())]);
        }
        let u = uploads.remove(id).expect("present");
        drop(uploads);
        let len = u.data.len();
        let r = self.store(&u.bucket, &u.name, u.data, u.content_type, u.cache_control, u.user_metadata, u.upsert);
        if r.status_code().0 != 200 {
            return r;
        }
        tus_response(204, &[("Upload-Offset", len.to_string())])
    }

    /// Fill an empty server with the demo project's buckets and objects,
    /// writing a copy of each object under `copy` for comparison.
    pub fn seed_demo(&self, copy: Option<&Path>) -> std::io::Result<()> {
        if !self.lock().buckets.is_empty() {
            return Ok(());
        }
        let _ = self.create_bucket(br#"{"name":"avatars","public":true,"allowed_mime_types":["image/png"]}"#);
        let _ = self.create_bucket(br#"{"name":"docs","file_size_limit":52428800}"#);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let photo: Vec<u8> = (0..3 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let objects: Vec<(&str, &str, Vec<u8>, &str)> = vec![
            ("avatars", "user1/face.png", photo, "image/png"),
            ("docs", "readme.txt", b"Welcome to the demo project.\n".to_vec(), "text/plain"),
            ("docs", "reports/2026/q1.txt", "quarterly numbers\n".repeat(20_000).into_bytes(), "text/plain"),
        ];
        for (bucket, name, data, ct) in objects {
            if let Some(dir) = copy {
                let p = dir.join(bucket).join(name);
                std::fs::create_dir_all(p.parent().expect("parent"))?;
                std::fs::write(&p, &data)?;
            }
            let meta = (name == "user1/face.png").then(|| json!({"uploaded_by": "demo"}));
            let _ = self.store(bucket, name, data, ct.to_string(), "max-age=3600".into(), meta, true);
        }
        Ok(())
    }

    fn delete_many(&self, bucket: &str, body: &[u8]) -> Response<Cursor<Vec<u8>>> {
        let v: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let Some(prefixes) = v["prefixes"].as_array() else {
            return error(400, "InvalidRequest", "body must have required property 'prefixes'");
        };
        if prefixes.len() > 1000 {
            return error(400, "InvalidRequest", "body/prefixes must NOT have more than 1000 items");
        }
        let mut st = self.lock();
        let mut deleted = Vec::new();
        if let Some(objs) = st.objects.get_mut(bucket) {
            for p in prefixes.iter().filter_map(|p| p.as_str()) {
                if let Some(o) = objs.remove(p) {
                    let _ = std::fs::remove_file(self.root.join(&o.file));
                    deleted.push(Self::list_entry(&o));
                }
            }
        }
        self.persist(&st);
        json_response(200, &Value::Array(deleted))
    }
}

fn route_kind(method: &Method, path: &str) -> &'static str {
    if path.starts_with("object/list") {
        "list"
    } else if path.starts_with("object/info") {
        "info"
    } else if path.starts_with("bucket") && *method == Method::Get {
        "bucket"
    } else if path.starts_with("object/") && matches!(method, Method::Get | Method::Head) {
        "download"
    } else if path.starts_with("upload/resumable") && *method == Method::Patch {
        "patch"
    } else {
        "upload"
    }
}
