//! A Supabase project as configured: where its database and Storage API
//! are, and the secrets to reach them.

use super::error::{SupabaseError, SupabaseResult};
use super::pgconn::DbTarget;
use super::settings::{check_flag_url, Secret, SettingsSource, UrlFlags};

/// Which parts of a project an operation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    All,
    Db,
    Storage,
}

impl Parts {
    pub fn parse(s: Option<&str>) -> SupabaseResult<Parts> {
        match s {
            None => Ok(Parts::All),
            Some("db") | Some("database") => Ok(Parts::Db),
            Some("storage") => Ok(Parts::Storage),
            Some(o) => Err(SupabaseError::Config(format!("--only takes db or storage, not {o:?}"))),
        }
    }
    pub fn db(self) -> bool {
        self != Parts::Storage
    }
    pub fn storage(self) -> bool {
        self != Parts::Db
    }
}

pub struct StorageTarget {
    /// Base URL of the Storage API, without a trailing slash.
    pub url: String,
    pub service_key: Secret,
}

pub struct Project {
    /// `SUPABASE_URL`, if set: names the project in snapshots.
    pub url: Option<String>,
    pub db: Option<DbTarget>,
    pub storage: Option<StorageTarget>,
}

impl Project {
    /// The project's identity as recorded in snapshots (and used to find
    /// earlier snapshots of it): the project URL, else the database, else
    /// the Storage API.
    pub fn identity(&self) -> String {
        match (&self.url, &self.db, &self.storage) {
            (Some(u), _, _) => u.trim_end_matches('/').to_string(),
            (None, Some(db), _) => format!("postgres://{}", db.display()),
            (None, None, Some(st)) => st.url.clone(),
            (None, None, None) => String::new(),
        }
    }
}

fn flag_or(
    source: &SettingsSource,
    flag: &Option<String>,
    flag_name: &str,
    var: &str,
) -> SupabaseResult<Option<String>> {
    if let Some(v) = flag {
        check_flag_url(flag_name, v)?;
        return Ok(Some(v.clone()));
    }
    source.get(var)
}

fn missing(var: &str, source: &SettingsSource, why: &str) -> SupabaseError {
    SupabaseError::Config(format!("{var} is not set ({why}); set it in {}", source.describe()))
}

/// Resolve the settings `parts` need; a missing one is an error naming it.
pub fn load_project(source: &SettingsSource, flags: &UrlFlags, parts: Parts) -> SupabaseResult<Project> {
    let url = flag_or(source, &flags.supabase_url, "--supabase-url", "SUPABASE_URL")?;
    if let Some(u) = &url {
        url::Url::parse(u).map_err(|e| SupabaseError::Config(format!("SUPABASE_URL is not a URL: {e}")))?;
    }
    let db = if parts.db() {
        let db_url = flag_or(source, &flags.db_url, "--db-url", "SUPABASE_DB_URL")?
            .ok_or_else(|| missing("SUPABASE_DB_URL", source, "the database connection string"))?;
        let mut target = DbTarget::parse(&db_url, None)?;
        if target.password.is_none() {
            target.password = source.secret("PGPASSWORD", "Database password: ")?;
        }
        Some(target)
    } else {
        None
    };
    let storage = if parts.storage() {
        let base = match flag_or(source, &flags.storage_url, "--storage-url", "SUPABASE_STORAGE_URL")? {
            Some(s) => s,
            None => match &url {
                Some(u) => format!("{}/storage/v1", u.trim_end_matches('/')),
                None => {
                    if parts == Parts::All {
                        // A database-only project: Storage is simply not configured.
                        return Ok(Project { url, db, storage: None });
                    }
                    return Err(missing("SUPABASE_URL", source, "the project URL, or SUPABASE_STORAGE_URL"));
                }
            },
        };
        url::Url::parse(&base).map_err(|e| SupabaseError::Config(format!("SUPABASE_STORAGE_URL is not a URL: {e}")))?;
        let key = source
            .secret("SUPABASE_SERVICE_ROLE_KEY", "Supabase service role key: ")?
            .ok_or_else(|| missing("SUPABASE_SERVICE_ROLE_KEY", source, "needed to read Storage"))?;
        Some(StorageTarget { url: base.trim_end_matches('/').to_string(), service_key: key })
    } else {
        None
    };
    Ok(Project { url, db, storage })
}
