//! Connecting to the project's Postgres: parsing `SUPABASE_DB_URL`, TLS as
//! `sslmode` asks, and the environment handed to pg_dump so that the child
//! connects the same way without a secret on its command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::Client;
use url::Url;

use super::error::{SupabaseError, SupabaseResult};
use super::settings::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> SupabaseResult<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(SupabaseError::Config(format!("unknown sslmode {other:?} in SUPABASE_DB_URL"))),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How the URL reaches the database, as far as it tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Direct,
    /// Supavisor in session mode: session state works.
    SessionPooler,
    /// Supavisor/pgbouncer in transaction mode: no exported snapshots.
    TransactionPooler,
}

#[derive(Clone)]
pub struct DbTarget {
    /// Host name, IP address, or a directory holding the Unix socket.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    /// Other URL parameters (application_name, options, connect_timeout).
    pub params: BTreeMap<String, String>,
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbTarget({})", self.display())
    }
}

pub fn is_local_host(host: &str) -> bool {
    host.starts_with('/') || host == "localhost" || host == "127.0.0.1" || host == "::1" || host == "[::1]"
}

impl DbTarget {
    /// Parse a `postgres://` / `postgresql://` URL. `password` (from
    /// PGPASSWORD or a prompt) is used when the URL has none.
    pub fn parse(url: &str, password: Option<Secret>) -> SupabaseResult<DbTarget> {
        let bad = |why: &str| SupabaseError::Config(format!("SUPABASE_DB_URL is not a valid Postgres URL: {why}"));
        let u = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if u.scheme() != "postgres" && u.scheme() != "postgresql" {
            return Err(bad("it must start with postgres:// or postgresql://"));
        }
        let mut params: BTreeMap<String, String> =
            u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let decode = |s: &str| percent_decode(s).map_err(|_| bad("bad percent-encoding"));
        let url_password = match u.password() {
            Some(p) => Some(Secret::new(decode(p)?)),
            None => params.remove("password").map(Secret::new),
        };
        let host = match params.remove("host") {
            Some(h) => h,
            None => u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()).unwrap_or_default(),
        };
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        let port = match params.remove("port") {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => u.port().unwrap_or(5432),
        };
        let user = match params.remove("user") {
            Some(x) => x,
            None if !u.username().is_empty() => decode(u.username())?,
            None => "postgres".to_string(),
        };
        let dbname = match params.remove("dbname") {
            Some(d) => d,
            None => {
                let p = decode(u.path().trim_start_matches('/'))?;
                if p.is_empty() {
                    "postgres".to_string()
                } else {
                    p
                }
            }
        };
        let sslmode = match params.remove("sslmode") {
            Some(m) => SslMode::parse(&m)?,
            None if is_local_host(&host) => SslMode::Prefer,
            // Encrypted by default off this machine, as the platform expects.
            None => SslMode::Require,
        };
        let sslrootcert = params.remove("sslrootcert").map(PathBuf::from);
        if let Some(p) = &sslrootcert {
            if !p.is_file() {
                return Err(SupabaseError::Config(format!("sslrootcert {} does not exist", p.display())));
            }
        }
        for unsupported in ["sslcert", "sslkey", "service", "passfile"] {
            if params.contains_key(unsupported) {
                return Err(SupabaseError::Config(format!("SUPABASE_DB_URL parameter {unsupported} is not supported")));
            }
        }
        Ok(DbTarget { host, port, user, dbname, password: url_password.or(password), sslmode, sslrootcert, params })
    }

    /// `host:port/dbname` with no credentials: safe to print and to store.
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{host}:{}/{}", self.port, self.dbname)
    }

    pub fn route(&self) -> Route {
        if self.port == 6543 {
            Route::TransactionPooler
        } else if self.host.contains("pooler.supabase.com") || self.user.starts_with("postgres.") {
            Route::SessionPooler
        } else {
            Route::Direct
        }
    }

    /// The project ref, when the URL names a hosted project.
    pub fn project_ref(&self) -> Option<String> {
        if let Some(r) = self.user.strip_prefix("postgres.") {
            return Some(r.to_string());
        }
        let rest = self.host.strip_prefix("db.")?;
        let (r, domain) = rest.split_once('.')?;
        domain.starts_with("supabase.").then(|| r.to_string())
    }

    fn connector(&self) -> SupabaseResult<MakeTlsConnector> {
        let tls_err = |e: openssl::error::ErrorStack| SupabaseError::Config(format!("TLS setup: {e}"));
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(tls_err)?;
        if let Some(ca) = &self.sslrootcert {
            b.set_ca_file(ca).map_err(|e| SupabaseError::Config(format!("sslrootcert {}: {e}", ca.display())))?;
        }
        // libpq: `require` with a root certificate behaves as `verify-ca`.
        let verify = match self.sslmode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.sslrootcert.is_some(),
            _ => false,
        };
        b.set_verify(if verify { SslVerifyMode::PEER } else { SslVerifyMode::NONE });
        let mut c = MakeTlsConnector::new(b.build());
        let check_host = self.sslmode == SslMode::VerifyFull;
        c.set_callback(move |cfg, _| {
            cfg.set_verify_hostname(check_host);
            Ok(())
        });
        Ok(c)
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host).port(self.port).user(&self.user).dbname(&self.dbname);
        c.application_name(self.params.get("application_name").map(String::as_str).unwrap_or("snap"));
        if let Some(o) = self.params.get("options") {
            c.options(o);
        }
        let timeout = self.params.get("connect_timeout").and_then(|t| t.parse().ok()).unwrap_or(30);
        c.connect_timeout(Duration::from_secs(timeout));
        c.keepalives(true);
        if let Some(p) = &self.password {
            c.password(p.expose());
        }
        c.ssl_mode(match self.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
        c
    }

    /// Open a connection; its driver runs on the current Tokio runtime.
    pub async fn connect(&self) -> SupabaseResult<Client> {
        Ok(self.connect_with_driver().await?.0)
    }

    /// Open a connection whose driver task is spawned on the current
    /// runtime, with its handle: the task ends once the client is dropped
    /// and the connection has closed.
    pub async fn connect_with_driver(&self) -> SupabaseResult<(Client, tokio::task::JoinHandle<()>)> {
        let connector = self.connector()?;
        let (client, connection) = self.config().connect(connector).await.map_err(|e| self.connect_error(e))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, driver))
    }

    fn connect_error(&self, e: tokio_postgres::Error) -> SupabaseError {
        let mut msg = super::error::pg_message(&e);
        if e.as_db_error().is_some_and(|db| db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD) {
            msg.push_str(" (set PGPASSWORD, or put the password in SUPABASE_DB_URL in an env file)");
        }
        SupabaseError::Database(format!("cannot connect to {}: {msg}", self.display()))
    }

    /// Environment for a libpq child (pg_dump, psql): the same target and
    /// TLS settings, the password in PGPASSWORD and never on argv.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGHOST".to_string(), self.host.clone()),
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGUSER".to_string(), self.user.clone()),
            ("PGDATABASE".to_string(), self.dbname.clone()),
            ("PGSSLMODE".to_string(), self.sslmode.name().to_string()),
            ("PGAPPNAME".to_string(), "snap".to_string()),
            ("PGCONNECT_TIMEOUT".to_string(), "30".to_string()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".to_string(), p.expose().to_string()));
        }
        if let Some(ca) = &self.sslrootcert {
            env.push(("PGSSLROOTCERT".to_string(), ca.display().to_string()));
        }
        if let Some(o) = self.params.get("options") {
            env.push(("PGOPTIONS".to_string(), o.clone()));
        }
        env
    }
}

/// Variables of the parent's environment a libpq child must not inherit:
/// they could point it somewhere else than the target.
pub const LIBPQ_VARS_TO_CLEAR: &[&str] = &[
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGHOSTADDR",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGOPTIONS",
    "PGPASSWORD",
];

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).map_err(|_| ())?, 16).map_err(|_| ())?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosted_and_local_urls() {
        let t = DbTarget::parse("postgresql://postgres.abcd:p%40ss@aws-0-eu.pooler.supabase.com:5432/postgres", None)
            .unwrap();
        assert_eq!(t.user, "postgres.abcd");
        assert_eq!(t.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(t.sslmode, SslMode::Require);
        assert_eq!(t.route(), Route::SessionPooler);
        assert_eq!(t.project_ref().as_deref(), Some("abcd"));
        assert!(!t.display().contains("p@ss"));

        let t = DbTarget::parse("postgres://postgres@db.xyz.supabase.co:6543/postgres?sslmode=verify-full", None);
        let t = t.unwrap();
        assert_eq!(t.route(), Route::TransactionPooler);
        assert_eq!(t.project_ref().as_deref(), Some("xyz"));
        assert_eq!(t.sslmode, SslMode::VerifyFull);

        let t = DbTarget::parse("postgres:///app?host=/tmp/sock&port=5433&user=me", None).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.user.as_str(), t.dbname.as_str()), ("/tmp/sock", 5433, "me", "app"));
        assert_eq!(t.sslmode, SslMode::Prefer);
        assert!(DbTarget::parse("mysql://x", None).is_err());
        assert!(DbTarget::parse("postgres://h/db?sslmode=bogus", None).is_err());
    }
}
