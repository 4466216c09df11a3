//! `snap verify ID`: does a live project hold what a snapshot holds?
//!
//! Per table, the row count and the order-independent row fingerprint
//! (`rowhash`) computed at backup are recomputed from the live table with
//! the same column list; roles, memberships, grants, policies and triggers
//! are compared as lists; per bucket, object names, sizes, content types
//! and the BLAKE3 of each object's bytes (`--quick`: sizes and etags only).

use std::collections::{BTreeSet, HashMap};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::catalog::{self, quote_ident};
use super::error::{SupabaseError, SupabaseResult};
use super::project::{Parts, Project};
use super::restore::snapshot_storage;
use super::rowhash::RowHash;
use super::storage_api::{ApiError, StorageClient};
use crate::repo::format::snapshot::Snapshot;
use crate::repo::repository::Repository;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Difference {
    /// table, role, grant, policy, trigger, membership, bucket, object
    pub kind: String,
    pub object: String,
    pub snapshot: String,
    pub project: String,
}

pub struct VerifyOptions {
    pub parts: Parts,
    pub quick: bool,
}

fn diff(kind: &str, object: impl Into<String>, snapshot: impl Into<String>, project: impl Into<String>) -> Difference {
    Difference { kind: kind.into(), object: object.into(), snapshot: snapshot.into(), project: project.into() }
}

pub fn verify_project(
    repo: &Repository,
    snapshot: &Snapshot,
    project: &Project,
    opts: &VerifyOptions,
) -> SupabaseResult<Vec<Difference>> {
    if snapshot.extra["kind"] != "supabase" {
        return Err(SupabaseError::Config("this snapshot is not of a Supabase project".into()));
    }
    repo.load_index()?;
    let rt = super::runtime()?;
    let handle = rt.handle();
    let mut out = Vec::new();
    let has = |p: &str| snapshot.extra["parts"].as_array().is_some_and(|a| a.iter().any(|x| x == p));
    if opts.parts.db() && has("db") {
        let db = project.db.as_ref().ok_or_else(|| SupabaseError::Config("SUPABASE_DB_URL is not set".into()))?;
        handle.block_on(verify_database(db, &snapshot.extra["database"], &mut out))?;
    }
    if opts.parts.storage() && has("storage") {
        let st = project.storage.as_ref().ok_or_else(|| {
            SupabaseError::Config("SUPABASE_URL or SUPABASE_STORAGE_URL is needed to verify Storage".into())
        })?;
        let client = StorageClient::new(&st.url, &st.service_key).map_err(|e| SupabaseError::Storage(e.to_string()))?;
        verify_storage(handle, &client, repo, snapshot, opts.quick, &mut out)?;
    }
    Ok(out)
}

async fn verify_database(
    db: &super::pgconn::DbTarget,
    manifest: &Value,
    out: &mut Vec<Difference>,
) -> SupabaseResult<()> {
    let c = db.connect().await?;
    // One snapshot of the live database for every comparison.
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}",
        super::catalog::COPY_TEXT_SETTINGS
    ))
    .await
    .map_err(SupabaseError::db)?;
    for t in manifest["tables"].as_array().into_iter().flatten() {
        let (Some(schema), Some(name)) = (t["schema"].as_str(), t["name"].as_str()) else { continue };
        let label = format!("{schema}.{name}");
        let expected = t["rows_hash"].as_str().map(String::from).unwrap_or_else(|| format!("{}:", t["rows"]));
        let cols: Vec<String> =
            t["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).map(quote_ident).collect();
        let sql = format!(
            "COPY (SELECT {} FROM ONLY {}.{}) TO STDOUT",
            if cols.is_empty() { "*".to_string() } else { cols.join(", ") },
            quote_ident(schema),
            quote_ident(name)
        );
        c.batch_execute("SAVEPOINT snap_verify").await.map_err(SupabaseError::db)?;
        let stream = match c.copy_out(sql.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                c.batch_execute("ROLLBACK TO SAVEPOINT snap_verify").await.map_err(SupabaseError::db)?;
                out.push(diff("table", label, expected, format!("cannot read: {}", super::error::pg_message(&e))));
                continue;
            }
        };
        futures_util::pin_mut!(stream);
        let mut h = RowHash::like(&expected);
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(SupabaseError::db)?);
        }
        let got = h.finish();
        let same = if expected.ends_with(':') { got.starts_with(&expected) } else { got == expected };
        if !same {
            let rows = |s: &str| s.split(':').next().unwrap_or_default().to_string();
            let detail = |s: &str| {
                if rows(s) == rows(&got) && rows(s) == rows(&expected) {
                    format!("{} rows, other content", rows(s))
                } else {
                    format!("{} rows", rows(s))
                }
            };
            out.push(diff("table", label, detail(&expected), detail(&got)));
        }
    }
    let live = catalog::security_catalog(&c).await?;
    let _ = c.batch_execute("COMMIT").await;
    let snap = &manifest["security"];
    for (key, kind) in [
        ("roles", "role"),
        ("memberships", "membership"),
        ("grants", "grant"),
        ("policies", "policy"),
        ("triggers", "trigger"),
    ] {
        if snap[key].is_null() {
            continue; // snapshots made before these were recorded
        }
        let set = |v: &Value| -> BTreeSet<String> {
            v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect()
        };
        let (a, b) = (set(&snap[key]), set(&live[key]));
        for missing in a.difference(&b) {
            out.push(diff(kind, missing.clone(), "present", "missing"));
        }
        for extra in b.difference(&a) {
            out.push(diff(kind, extra.clone(), "absent", "present"));
        }
    }
    Ok(())
}

fn verify_storage(
    handle: &tokio::runtime::Handle,
    client: &StorageClient,
    repo: &Repository,
    snapshot: &Snapshot,
    quick: bool,
    out: &mut Vec<Difference>,
) -> SupabaseResult<()> {
    let storage_err = |e: ApiError| SupabaseError::Storage(e.to_string());
    let live_buckets: Vec<String> =
        handle.block_on(client.list_buckets()).map_err(storage_err)?.into_iter().map(|b| b.id).collect();
    for (bucket, objects) in snapshot_storage(repo, snapshot)? {
        let id = bucket["id"].as_str().unwrap_or_default().to_string();
        if !live_buckets.contains(&id) {
            out.push(diff("bucket", &id, "present", "missing"));
            continue;
        }
        let live: HashMap<String, (Option<u64>, Option<String>)> = handle
            .block_on(client.list_objects(&id))
            .map_err(storage_err)?
            .into_iter()
            .map(|l| (l.name, (l.size, l.etag)))
            .collect();
        for o in &objects {
            let label = format!("{id}/{}", o.name);
            let Some((size, etag)) = live.get(&o.name) else {
                out.push(diff("object", label, "present", "missing"));
                continue;
            };
            if *size != Some(o.size) {
                out.push(diff("object", label, format!("{} bytes", o.size), format!("{} bytes", size.unwrap_or(0))));
                continue;
            }
            let snap_etag = o.attrs.get("etag").and_then(Value::as_str).map(|e| e.trim_matches('"').to_string());
            if quick {
                if etag.as_deref().map(|e| e.trim_matches('"').to_string()) != snap_etag {
                    out.push(diff("object", label, "etag differs", "etag differs"));
                }
                continue;
            }
            let info = handle.block_on(client.object_info(&id, &o.name)).map_err(storage_err)?;
            let snap_ct = o.attrs.get("content_type").and_then(Value::as_str);
            if info.content_type.as_deref() != snap_ct {
                out.push(diff(
                    "object",
                    label.clone(),
                    format!("content type {}", snap_ct.unwrap_or("-")),
                    format!("content type {}", info.content_type.as_deref().unwrap_or("-")),
                ));
            }
            let mut dl = handle.block_on(client.download(&id, &o.name, 0)).map_err(storage_err)?;
            let mut hasher = blake3::Hasher::new();
            while let Some(chunk) = handle.block_on(dl.next_chunk()).map_err(storage_err)? {
                hasher.update(&chunk);
            }
            let got = hasher.finalize().to_hex().to_string();
            if o.attrs.get("blake3").and_then(Value::as_str) != Some(got.as_str()) {
                out.push(diff("object", label, "snapshot bytes", "other bytes"));
            }
        }
        for name in live.keys().filter(|n| !objects.iter().any(|o| &&o.name == n)) {
            out.push(diff("object", format!("{id}/{name}"), "absent", "present"));
        }
    }
    Ok(())
}
