//! Health checks of a project's side of a backup, for `snap doctor`: can
//! the database be reached, read and restored into, are the client tools
//! new enough, is the Storage API reachable with a key that may read
//! everything, and do the clocks agree. Each check ends in a finding with
//! a fix a person can act on.

use serde::Serialize;

use super::catalog;
use super::pgconn::{is_local_host, DbTarget};
use super::pgtools;
use super::project::StorageTarget;
use super::storage_api::{ApiError, StorageClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but something will go wrong later or partly.
    Warn,
    Fail,
    /// Not applicable, or could not be tried because an earlier check failed.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: &str, detail: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Pass, detail: detail.into(), fix: None }
    }
    pub fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
    pub fn skip(check: &str, detail: impl Into<String>) -> Finding {
        Finding { check: check.into(), status: Status::Skip, detail: detail.into(), fix: None }
    }
}

/// How far the local clock may be from the Storage server's. Signed URLs,
/// JWT expiry and snapshot ages all assume the two agree.
pub const MAX_CLOCK_SKEW_S: f64 = 60.0;

/// The database checks: connection, encryption, privileges, client tools.
pub async fn check_database(db: &DbTarget) -> Vec<Finding> {
    let mut out = Vec::new();
    let client = match db.connect().await {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            let fix = if message.contains("password authentication failed") || message.contains("PGPASSWORD") {
                "set the database password in PGPASSWORD or in SUPABASE_DB_URL (Project Settings → Database)"
            } else {
                "check that the database is running and that SUPABASE_DB_URL's host and port are reachable from this \
                 host (on an IPv4-only network use the pooler's session-mode address)"
            };
            out.push(Finding::fail("database", message, fix));
            for name in ["database encryption", "database privileges", "pg_dump", "pg_dumpall", "psql"] {
                out.push(Finding::skip(name, "the database cannot be reached"));
            }
            return out;
        }
    };
    let info = match catalog::server_info(&client).await {
        Ok(i) => i,
        Err(e) => {
            out.push(Finding::fail(
                "database",
                format!("connected, but cannot read server facts: {e}"),
                "check the role's rights",
            ));
            return out;
        }
    };
    out.push(Finding::pass("database", format!("{} as {}, PostgreSQL {}", db.display(), info.user, info.version)));
    out.push(encryption(&client, db).await);
    out.push(privileges(&client, &info).await);
    // pg_dump and pg_dumpall make the backup; psql is what a person reaches
    // for at 3 a.m. to look at a restored project.
    for tool in ["pg_dump", "pg_dumpall", "psql"] {
        out.push(match pgtools::find_tool(tool, info.major()) {
            Ok(t) => Finding::pass(tool, format!("{} at {}", t.version, t.path.display())),
            Err(e) => Finding::fail(
                tool,
                e.to_string(),
                format!(
                    "install postgresql-client-{0} (apt.postgresql.org has every version), or point SNAP_PG_BIN at a \
                     directory holding {tool} {0} or newer",
                    info.major()
                ),
            ),
        });
    }
    out
}

async fn encryption(client: &tokio_postgres::Client, db: &DbTarget) -> Finding {
    let name = "database encryption";
    let row =
        client.query_opt("SELECT ssl, coalesce(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await;
    let (ssl, version) = match row {
        Ok(Some(r)) => (r.get::<_, bool>(0), r.get::<_, String>(1)),
        Ok(None) => (false, String::new()),
        Err(e) => {
            return Finding::warn(
                name,
                format!("cannot tell: {}", super::error::pg_message(&e)),
                "to be sure, add sslmode=require to SUPABASE_DB_URL",
            )
        }
    };
    if ssl {
        Finding::pass(name, format!("TLS ({version})"))
    } else if is_local_host(&db.host) {
        Finding::pass(name, "not encrypted, and not needed: the database is on this host")
    } else {
        Finding::fail(
            name,
            format!("the connection to {} is not encrypted: passwords and data cross the network in clear", db.host),
            "add sslmode=require (or verify-full with sslrootcert) to SUPABASE_DB_URL, and enable TLS on the server",
        )
    }
}

async fn privileges(client: &tokio_postgres::Client, info: &catalog::ServerInfo) -> Finding {
    let name = "database privileges";
    let tables = match catalog::data_tables(client).await {
        Ok(t) => t,
        Err(e) => {
            return Finding::fail(name, format!("cannot list tables: {e}"), "connect as the project's postgres role")
        }
    };
    let unreadable: Vec<String> = tables.iter().filter(|t| !t.readable).map(|t| t.display()).collect();
    if !unreadable.is_empty() {
        let shown: Vec<&str> = unreadable.iter().take(5).map(String::as_str).collect();
        return Finding::fail(
            name,
            format!(
                "{} cannot read {} of {} tables ({}{})",
                info.user,
                unreadable.len(),
                tables.len(),
                shown.join(", "),
                if unreadable.len() > shown.len() { ", …" } else { "" }
            ),
            "connect as the project's postgres role, or GRANT SELECT on those tables to this role",
        );
    }
    let createrole = client
        .query_one("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    // Restore loads rows with triggers off; where the server refuses,
    // it loads them in dependency order instead, which is slower.
    let replica = client.batch_execute("BEGIN; SET LOCAL session_replication_role = replica; ROLLBACK").await.is_ok();
    if !replica {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let detail = format!("{} reads all {} tables", info.user, tables.len());
    match (createrole, replica) {
        (true, true) => Finding::pass(name, format!("{detail}; can create roles and load rows in replica mode")),
        (false, _) => Finding::warn(
            name,
            format!("{detail}, but cannot create roles: a restore cannot recreate the project's roles"),
            "restore as the project's postgres role (it has CREATEROLE)",
        ),
        (true, false) => Finding::warn(
            name,
            format!("{detail}, but may not set session_replication_role: restore will load rows without replica mode"),
            "restore as the project's postgres role",
        ),
    }
}

/// The Storage checks: key kind, reachability with that key, transport
/// encryption, and the clock against the server's.
pub async fn check_storage(st: &StorageTarget) -> Vec<Finding> {
    let mut out = vec![key_kind(st.service_key.expose())];
    let host = url::Url::parse(&st.url).ok().and_then(|u| Some((u.scheme().to_string(), u.host_str()?.to_string())));
    out.push(match &host {
        Some((scheme, _)) if scheme == "https" => Finding::pass("storage encryption", "HTTPS"),
        Some((_, h)) if is_local_host(h) => Finding::pass("storage encryption", "plain HTTP, on this host"),
        _ => Finding::fail(
            "storage encryption",
            format!("{} is plain HTTP: the service role key would cross the network in clear", st.url),
            "use the https:// address of the project",
        ),
    });
    let client = match StorageClient::new(&st.url, &st.service_key) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::fail("storage api", e.to_string(), "check SUPABASE_SERVICE_ROLE_KEY"));
            return out;
        }
    };
    let started = std::time::Instant::now();
    match client.probe().await {
        Ok((buckets, date)) => {
            out.push(Finding::pass("storage api", format!("{} answers; {buckets} buckets", st.url)));
            out.push(clock(date.as_deref(), started.elapsed()));
        }
        Err(e) => {
            let fix = match &e {
                ApiError::Permanent(m) if m.contains("HTTP 401") || m.contains("HTTP 403") => {
                    "set SUPABASE_SERVICE_ROLE_KEY to the service_role key (Project Settings → API), not the anon key"
                }
                ApiError::NotFound(_) => "check SUPABASE_URL (or SUPABASE_STORAGE_URL: it ends in /storage/v1)",
                _ => "check SUPABASE_URL and that this host can reach it",
            };
            out.push(Finding::fail("storage api", e.to_string(), fix));
            out.push(Finding::skip("clock", "the Storage API cannot be reached"));
        }
    }
    out
}

/// A legacy JWT key says its role in its payload; new keys say their kind
/// in their prefix. An anon or publishable key lists only what RLS lets
/// the public see, so a backup with it would be quietly incomplete.
fn key_kind(key: &str) -> Finding {
    let name = "storage key";
    let fix = "use the service_role (or sb_secret_) key from Project Settings → API";
    if key.starts_with("sb_secret_") {
        return Finding::pass(name, "a secret key");
    }
    if key.starts_with("sb_publishable_") {
        return Finding::fail(name, "a publishable key: it sees only what RLS lets the public see", fix);
    }
    let Some(claims) = jwt_claims(key) else {
        return Finding::warn(name, "not a JWT nor an sb_secret_ key: cannot tell its role", fix);
    };
    if let Some(exp) = claims["exp"].as_i64() {
        if exp < chrono::Utc::now().timestamp() {
            return Finding::fail(name, "the key has expired", fix);
        }
    }
    match claims["role"].as_str() {
        Some("service_role") | Some("supabase_admin") => Finding::pass(name, "a service_role key"),
        Some(role) => {
            Finding::fail(name, format!("a key for role {role}: it sees only what RLS allows that role"), fix)
        }
        None => Finding::warn(name, "a JWT without a role claim", fix),
    }
}

fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Compare the server's `Date` with the local clock. `Date` has whole
/// seconds and the request took `rtt`, so allow for both.
fn clock(date: Option<&str>, rtt: std::time::Duration) -> Finding {
    let Some(server) = date.and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok()) else {
        return Finding::skip("clock", "the Storage API sent no Date header");
    };
    let skew = (chrono::Utc::now() - server.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0;
    let slack = 1.0 + rtt.as_secs_f64();
    if skew.abs() <= MAX_CLOCK_SKEW_S + slack {
        Finding::pass("clock", format!("within {:.0} s of the Storage server", skew.abs().max(1.0)))
    } else {
        Finding::fail(
            "clock",
            format!(
                "this host's clock is {:.0} s {} the Storage server's",
                skew.abs(),
                if skew > 0.0 { "ahead of" } else { "behind" }
            ),
            "turn on time sync (timedatectl set-ntp true, or chrony)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(r#"{"alg":"HS256"}"#), e.encode(payload))
    }

    #[test]
    fn key_kinds() {
        assert_eq!(key_kind(&jwt(r#"{"role":"service_role"}"#)).status, Status::Pass);
        let anon = key_kind(&jwt(r#"{"role":"anon","exp":4102444800}"#));
        assert_eq!(anon.status, Status::Fail);
        assert!(anon.detail.contains("anon"));
        assert_eq!(key_kind(&jwt(r#"{"role":"service_role","exp":1000}"#)).status, Status::Fail);
        assert_eq!(key_kind("sb_secret_abc").status, Status::Pass);
        assert_eq!(key_kind("sb_publishable_abc").status, Status::Fail);
        assert_eq!(key_kind("opaque").status, Status::Warn);
    }

    #[test]
    fn clock_skew() {
        let rtt = std::time::Duration::from_millis(5);
        let now = chrono::Utc::now();
        assert_eq!(clock(Some(&now.to_rfc2822()), rtt).status, Status::Pass);
        let late = (now - chrono::Duration::seconds(300)).to_rfc2822();
        let f = clock(Some(&late), rtt);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("ahead of"), "{}", f.detail);
        // The HTTP form ("GMT") parses.
        assert_ne!(clock(Some("Sun, 22 Nov 2026 04:21:43 GMT"), rtt).status, Status::Skip);
        assert_eq!(clock(None, rtt).status, Status::Skip);
    }
}
