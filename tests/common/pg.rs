//! Throwaway PostgreSQL clusters for tests, built like a Supabase project
//! (tests/fixtures/platform.sql as the superuser `supabase_admin`, then
//! tests/fixtures/project.sql as the non-superuser `postgres`).
//!
//! Each test gets its own cluster (initdb + pg_ctl on a free port), so
//! tests stay independent and run in parallel. When running as root the
//! server runs as the `postgres` system user, since Postgres refuses root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bin: PathBuf,
    pub database: String,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest PostgreSQL server binaries on this machine.
pub fn server_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).expect("PostgreSQL server binaries (Debian package postgresql) are needed")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run_as_server_user(bin: &Path, tool: &str, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Start a cluster with the platform and the user's project loaded.
    pub fn supabase_like() -> Cluster {
        Cluster::start().with_fixture()
    }

    /// A fresh project: the platform only, as a new Supabase project is.
    pub fn fresh_project() -> Cluster {
        let c = Cluster::start();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let platform = std::fs::read_to_string(fixtures.join("platform.sql"))
            .unwrap()
            .replace("CURRENT_DATABASE_PLACEHOLDER", &c.database);
        c.psql_as("supabase_admin", &platform);
        c
    }

    /// Load the platform and the user's project into this cluster.
    pub fn with_fixture(self) -> Cluster {
        let c = self;
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let platform = std::fs::read_to_string(fixtures.join("platform.sql"))
            .unwrap()
            .replace("CURRENT_DATABASE_PLACEHOLDER", &c.database);
        c.psql_as("supabase_admin", &platform);
        c.psql_as("postgres", &std::fs::read_to_string(fixtures.join("project.sql")).unwrap());
        c
    }

    pub fn start() -> Cluster {
        Cluster::start_with(None, free_port())
    }

    /// A cluster on a given port, if the port is free.
    pub fn start_at(port: u16) -> Option<Cluster> {
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        Some(Cluster::start_with(None, port))
    }

    /// Start a cluster that only accepts TLS over TCP, with the given
    /// server certificate and key (PEM).
    pub fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> Cluster {
        Cluster::start_with(Some((cert_pem, key_pem)), free_port())
    }

    fn start_with(tls: Option<(&[u8], &[u8])>, port: u16) -> Cluster {
        let dir = tempfile::Builder::new().prefix("snap-pg-").tempdir().unwrap();
        let bin = server_bin();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "admin-secret\n").unwrap();
        if is_root() {
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(st.success());
        }
        run_as_server_user(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "supabase_admin",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=40",
            dir.path().display()
        );
        if let Some((cert, key)) = tls {
            let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                let st = Command::new("chown").args(["postgres:postgres"]).arg(&c).arg(&k).status().unwrap();
                assert!(st.success());
            }
            opts.push_str(&format!(" -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}", c.display(), k.display()));
            // TCP only with TLS; the Unix socket (used by the fixture loader) stays trusted.
            let hba = data.join("pg_hba.conf");
            std::fs::write(
                &hba,
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
        }
        let log = dir.path().join("log");
        run_as_server_user(
            &bin,
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        Cluster { dir, port, bin, database: "postgres".to_string() }
    }

    /// Run SQL through psql over the Unix socket (trusted) as `role`.
    pub fn psql_as(&self, role: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", role, "-d", &self.database, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "psql as {role} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// COPY output of a query, as psql (not snap) produces it.
    pub fn copy_out(&self, query: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "supabase_admin", "-d", &self.database, "-c"])
            .arg(format!("COPY ({query}) TO STDOUT"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// The URL users would give snap: TCP, user postgres, no password in it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.database)
    }
}

impl Cluster {
    /// Stop the server at once (as a crash or an outage would).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
