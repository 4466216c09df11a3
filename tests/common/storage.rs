//! The project's Storage test server (`snap-storage-server`) started per
//! test on a free port, and a minimal HTTP client to seed it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use base64::Engine;

pub struct StorageServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub key: String,
    child: Child,
}

impl StorageServer {
    pub fn start(faults: &str) -> StorageServer {
        let dir = tempfile::tempdir().unwrap();
        let key = format!("service-role-{}", hex::encode(rand::random::<[u8; 12]>()));
        StorageServer::start_in(dir, &key, faults)
    }

    pub fn start_in(dir: tempfile::TempDir, key: &str, faults: &str) -> StorageServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snap-storage-server"))
            .arg("--root")
            .arg(dir.path())
            .args(["--faults", faults])
            .env("SNAP_STORAGE_SERVICE_KEY", key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().rsplit(':').next().unwrap().parse().expect("server prints its port");
        StorageServer { dir, port, key: key.to_string(), child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request; returns (status, body).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {k}\r\napikey: {k}\r\nContent-Length: {}\r\n",
            body.len(),
            k = self.key
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = resp[head_end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, body)
    }

    pub fn create_bucket(&self, body: serde_json::Value) {
        let (s, b) =
            self.request("POST", "/bucket", &[("Content-Type", "application/json")], body.to_string().as_bytes());
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }

    pub fn upload(&self, bucket: &str, name: &str, data: &[u8], content_type: &str, meta: Option<serde_json::Value>) {
        let meta = meta.map(|m| base64::engine::general_purpose::STANDARD.encode(m.to_string()));
        let mut h = vec![("Content-Type", content_type), ("Cache-Control", "max-age=3600"), ("x-upsert", "true")];
        if let Some(m) = &meta {
            h.push(("x-metadata", m));
        }
        let path = format!("/object/{bucket}/{}", encode(name));
        let (s, b) = self.request("POST", &path, &h, data);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }

    pub fn delete(&self, bucket: &str, name: &str) {
        let (s, _) = self.request("DELETE", &format!("/object/{bucket}/{}", encode(name)), &[], b"");
        assert_eq!(s, 200);
    }
}

pub fn encode(name: &str) -> String {
    name.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

impl Drop for StorageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
