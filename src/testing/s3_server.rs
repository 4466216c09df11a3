//! A real S3-compatible server for tests and benchmarks (moto in server
//! mode, from Python's `moto[server]`), and a proxy that sits in front of it
//! and injects the failures S3 services produce: throttling, 5xx, and
//! connections dropped in the middle of an upload or a download.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A moto server on a free loopback port, stopped on drop.
pub struct S3TestServer {
    child: Child,
    port: u16,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl S3TestServer {
    /// Start moto (`SNAP_TEST_PYTHON`, default `python3`) and wait until it answers.
    pub fn start() -> io::Result<S3TestServer> {
        let python = std::env::var("SNAP_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = free_port()?;
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut server = S3TestServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = server.request("GET", "/", b"") {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "moto exited ({status}): install it with `pip install 'moto[server]'` (scripts/install-deps does)"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("moto did not answer within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        match self.request("PUT", &format!("/{name}"), b"")? {
            (200, _) => Ok(()),
            (code, body) => Err(io::Error::other(format!("creating bucket {name}: {code} {body}"))),
        }
    }

    /// One unsigned request (moto does not check signatures).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failure the proxy can inject in place of forwarding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 with S3's `SlowDown` error body: throttling.
    SlowDown,
    /// 500 with S3's `InternalError` body.
    InternalError,
    /// Read half of the request body, then close the connection unanswered.
    DropMidUpload,
    /// Forward the request, then send the headers and half the body and close.
    DropMidDownload,
}

/// Which requests fail: every `every`-th request whose method is in
/// `methods` (all methods if empty) and whose path contains `path` (if
/// set), cycling through `faults`.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    pub every: u64,
    pub methods: Vec<String>,
    pub path: Option<String>,
    pub faults: Vec<Fault>,
    /// Added before every forwarded request: a distant service's round trip.
    pub latency: Duration,
}

/// An HTTP proxy in front of an S3 server that injects faults and counts
/// the requests it forwards by method and first path segment after the bucket.
pub struct FaultyProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    plan: Arc<Mutex<FaultPlan>>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    injected: Arc<AtomicU64>,
}

struct ProxyState {
    upstream: u16,
    plan: Arc<Mutex<FaultPlan>>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    seen: AtomicU64,
    injected: Arc<AtomicU64>,
}

impl FaultyProxy {
    pub fn start(upstream: &S3TestServer, plan: FaultPlan) -> io::Result<FaultyProxy> {
        Self::start_on(0, upstream.port, plan)
    }

    /// A proxy on `port` (0: any free one) in front of `127.0.0.1:upstream`.
    pub fn start_on(port: u16, upstream: u16, plan: FaultPlan) -> io::Result<FaultyProxy> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(ProxyState {
            upstream,
            plan: Arc::new(Mutex::new(plan)),
            counts: Arc::default(),
            seen: AtomicU64::new(0),
            injected: Arc::default(),
        });
        let proxy = FaultyProxy {
            port,
            stop: stop.clone(),
            plan: state.plan.clone(),
            counts: state.counts.clone(),
            injected: state.injected.clone(),
        };
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let state = state.clone();
                        std::thread::spawn(move || {
                            let _ = serve_connection(&state, conn);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        Ok(proxy)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    /// Requests forwarded so far, keyed `METHOD kind` (e.g. `GET snapshots`).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn faults_injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct RequestHead {
    method: String,
    target: String,
    lines: Vec<String>,
    content_length: usize,
}

fn read_head(r: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut lines = Vec::new();
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        lines.push(line);
    }
    Ok(Some(RequestHead { method, target, lines, content_length }))
}

/// `GET data`, `PUT snapshots`, … : the method and the repository directory.
fn count_key(head: &RequestHead) -> String {
    let path = head.target.split('?').next().unwrap_or_default();
    let query = head.target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let kind = ["config", "keys", "data", "index", "snapshots", "locks"]
        .into_iter()
        .find(|k| path.contains(&format!("/{k}")))
        .unwrap_or(if query.contains("list-type") { "list" } else { "other" });
    format!("{} {kind}", head.method)
}

fn s3_error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>snap-test</RequestId></Error>"
    );
    let reason = if status == 503 { "Service Unavailable" } else { "Internal Server Error" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve_connection(state: &ProxyState, conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut client_out = conn.try_clone()?;
    let mut client_in = BufReader::new(conn);
    while let Some(head) = read_head(&mut client_in)? {
        let mut body = vec![0u8; head.content_length];
        let (fault, latency) = {
            let plan = state.plan.lock().unwrap_or_else(|p| p.into_inner());
            let applies = plan.every > 0
                && !plan.faults.is_empty()
                && (plan.methods.is_empty() || plan.methods.iter().any(|m| m == &head.method))
                && plan.path.as_ref().is_none_or(|p| head.target.contains(p.as_str()));
            let fault = if applies {
                let n = state.seen.fetch_add(1, Ordering::Relaxed) + 1;
                (n % plan.every == 0).then(|| plan.faults[((n / plan.every) as usize) % plan.faults.len()])
            } else {
                None
            };
            (fault, plan.latency)
        };
        std::thread::sleep(latency);
        if fault.is_some() {
            state.injected.fetch_add(1, Ordering::Relaxed);
        }
        match fault {
            Some(Fault::DropMidUpload) => {
                let half = body.len() / 2;
                client_in.read_exact(&mut body[..half])?;
                let _ = client_out.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(f @ (Fault::SlowDown | Fault::InternalError)) => {
                client_in.read_exact(&mut body)?;
                let reply = if f == Fault::SlowDown {
                    s3_error(503, "SlowDown", "Please reduce your request rate.")
                } else {
                    s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
                };
                client_out.write_all(&reply)?;
                continue;
            }
            _ => client_in.read_exact(&mut body)?,
        }
        *state.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(count_key(&head)).or_default() += 1;
        let mut upstream = TcpStream::connect(("127.0.0.1", state.upstream))?;
        let mut request = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
        for line in &head.lines {
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("Connection: close\r\n\r\n");
        upstream.write_all(request.as_bytes())?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        if fault == Some(Fault::DropMidDownload) {
            let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
            let cut = head_end + (response.len() - head_end) / 2;
            client_out.write_all(&response[..cut])?;
            let _ = client_out.shutdown(Shutdown::Both);
            return Ok(());
        }
        // The upstream closed its side; tell the client this one stays open
        // only if the upstream's framing allows it (Content-Length present).
        let text_head_end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
        let head_text = String::from_utf8_lossy(&response[..text_head_end]).to_ascii_lowercase();
        client_out.write_all(&response)?;
        if !head_text.contains("content-length:") {
            let _ = client_out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}
