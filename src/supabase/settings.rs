//! Where a project's settings come from, and keeping its secrets secret.
//!
//! Each setting is looked up, in order, in the process environment, the env
//! file (`--env-file`, else `.env` in the working directory), a `NAME_FILE`
//! variable naming a file that holds it, and, for secrets only, a no-echo
//! prompt when standard input is a terminal. URLs may also come from flags,
//! which are refused when they embed a password: argv is visible to every
//! user of the machine.
//!
//! Every secret found is registered with [`redact`], which the CLI applies
//! to everything it prints, so a secret that slips into an error message
//! from a library still never reaches the terminal or a log.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use url::Url;
use zeroize::Zeroizing;

use super::error::{SupabaseError, SupabaseResult};

/// A secret string: zeroed on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Secret {
        register_secret(&s);
        Secret(Zeroizing::new(s))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

static SECRETS: Mutex<Vec<Zeroizing<String>>> = Mutex::new(Vec::new());

/// Remember a secret so that [`redact`] hides it. Short strings are not
/// registered: replacing every "a" in a message would hide nothing useful.
pub fn register_secret(s: &str) {
    if s.len() < 4 {
        return;
    }
    let mut list = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !list.iter().any(|x| x.as_str() == s) {
        list.push(Zeroizing::new(s.to_string()));
        // Longest first, so a secret containing another is hidden whole.
        list.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// Replace every registered secret (and its percent-encoded form, as it
/// would appear inside a URL) in `text` with `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let list = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for s in list.iter() {
        out = out.replace(s.as_str(), "[REDACTED]");
        let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        for form in [encoded.clone(), encoded.replace('+', "%20")] {
            if form != **s {
                out = out.replace(&form, "[REDACTED]");
            }
        }
    }
    out
}

/// The variables and files settings are read from.
pub struct SettingsSource {
    env_file: HashMap<String, String>,
    env_file_path: Option<PathBuf>,
    interactive: bool,
}

impl SettingsSource {
    /// Read the env file: `explicit` if given (it must exist), else `.env` in
    /// the working directory if there is one.
    pub fn load(explicit: Option<&Path>) -> SupabaseResult<SettingsSource> {
        let path = match explicit {
            Some(p) => {
                if !p.is_file() {
                    return Err(SupabaseError::Config(format!("env file {} does not exist", p.display())));
                }
                Some(p.to_path_buf())
            }
            None => Some(PathBuf::from(".env")).filter(|p| p.is_file()),
        };
        let mut env_file = HashMap::new();
        if let Some(p) = &path {
            let iter = dotenvy::from_path_iter(p)
                .map_err(|e| SupabaseError::Config(format!("cannot read env file {}: {e}", p.display())))?;
            for item in iter {
                let (k, v) = item.map_err(|e| {
                    // dotenvy quotes the offending line, which may hold a secret.
                    let line = match e {
                        dotenvy::Error::LineParse(_, idx) => format!(" near character {idx}"),
                        _ => String::new(),
                    };
                    SupabaseError::Config(format!("env file {} has a line it cannot parse{line}", p.display()))
                })?;
                env_file.insert(k, v);
            }
        }
        Ok(SettingsSource { env_file, env_file_path: path, interactive: std::io::stdin().is_terminal() })
    }

    /// A source with only the given variables, for tests.
    pub fn from_map(vars: HashMap<String, String>) -> SettingsSource {
        SettingsSource { env_file: vars, env_file_path: None, interactive: false }
    }

    /// A variable as set (environment first, then the env file), with no
    /// `_FILE` indirection followed.
    pub fn raw(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().or_else(|| self.env_file.get(name).cloned()).filter(|v| !v.is_empty())
    }

    /// Look a setting up: variable, env file, then `NAME_FILE`.
    pub fn get(&self, name: &str) -> SupabaseResult<Option<String>> {
        if let Some(v) = self.raw(name) {
            return Ok(Some(v));
        }
        let file_var = format!("{name}_FILE");
        if let Some(path) = self.raw(&file_var) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| SupabaseError::Config(format!("{file_var}: cannot read {path}: {e}")))?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(SupabaseError::Config(format!("{file_var}: {path} is empty")));
            }
            return Ok(Some(text));
        }
        Ok(None)
    }

    /// Look a secret up as `get` does, then ask on a terminal.
    pub fn secret(&self, name: &str, prompt: &str) -> SupabaseResult<Option<Secret>> {
        if let Some(v) = self.get(name)? {
            return Ok(Some(Secret::new(v)));
        }
        if self.interactive {
            let v = rpassword::prompt_password(prompt)
                .map_err(|e| SupabaseError::Config(format!("cannot read {name}: {e}")))?;
            if !v.is_empty() {
                return Ok(Some(Secret::new(v)));
            }
        }
        Ok(None)
    }

    pub fn describe(&self) -> String {
        match &self.env_file_path {
            Some(p) => format!("the environment or {}", p.display()),
            None => "the environment (or a .env file)".to_string(),
        }
    }
}

/// URLs given as flags, which take precedence over the environment.
#[derive(Debug, Default, Clone)]
pub struct UrlFlags {
    pub db_url: Option<String>,
    pub supabase_url: Option<String>,
    pub storage_url: Option<String>,
}

/// Refuse a URL from argv that carries a password or key.
pub fn check_flag_url(flag: &str, value: &str) -> SupabaseResult<()> {
    let has_secret = match Url::parse(value) {
        Ok(u) => u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password" || k == "apikey"),
        Err(_) => value.contains("password="),
    };
    if has_secret {
        return Err(SupabaseError::Config(format!(
            "{flag} must not contain a password (command lines are visible to other users); \
             put it in PGPASSWORD, an env file, or {flag_var}_FILE",
            flag_var = flag.trim_start_matches("--").replace('-', "_").to_uppercase()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_plain_and_url_encoded() {
        register_secret("s3cr3t/pass word");
        let msg = "postgres://u:s3cr3t%2Fpass+word@h/db failed: s3cr3t/pass word";
        let r = redact(msg);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(format!("{:?}", Secret::new("abcdef".into())).contains("REDACTED"));
    }

    #[test]
    fn flag_urls_with_passwords_are_refused() {
        assert!(check_flag_url("--db-url", "postgres://postgres:pw@localhost/db").is_err());
        assert!(check_flag_url("--db-url", "postgres://postgres@localhost/db?password=x").is_err());
        assert!(check_flag_url("--db-url", "postgres://postgres@localhost/db?sslmode=require").is_ok());
    }
}
