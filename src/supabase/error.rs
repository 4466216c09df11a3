//! Errors of the Supabase side. Messages are one line and never hold a
//! secret: settings are redacted where they are built, and the CLI redacts
//! again before printing.

use crate::repo::Error as RepoError;

#[derive(Debug, thiserror::Error)]
pub enum SupabaseError {
    /// A setting is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached or refused a query.
    #[error("database: {0}")]
    Database(String),
    /// pg_dump / pg_dumpall / psql missing, too old, or failed.
    #[error("{0}")]
    Tool(String),
    /// The Storage API failed for good (after retries).
    #[error("storage: {0}")]
    Storage(String),
    /// Some objects could not be backed up and `--allow-partial` was given.
    #[error("{0}")]
    Partial(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

pub type SupabaseResult<T> = std::result::Result<T, SupabaseError>;

impl SupabaseError {
    pub fn db(e: tokio_postgres::Error) -> SupabaseError {
        SupabaseError::Database(pg_message(&e))
    }
}

/// Fold a multi-line message (Postgres details, HTTP bodies) into one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A Postgres error as one line: the server's message (and hint) when it
/// sent one, else the client's error and its cause. tokio-postgres' own
/// `Display` says only "db error" for server errors.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = db.message().to_string();
        if let Some(h) = db.hint() {
            m.push_str(&format!(" (hint: {h})"));
        }
        return one_line(&m);
    }
    match std::error::Error::source(e) {
        Some(src) => one_line(&format!("{e}: {src}")),
        None => one_line(&e.to_string()),
    }
}
