//! Where the repository password comes from, in order: `SNAP_PASSWORD_FILE`,
//! `SNAP_PASSWORD_COMMAND`, `SNAP_PASSWORD`, then a no-echo prompt when
//! standard input is a terminal. The password is never echoed, logged, or
//! put in an error message.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::CliError;

pub type Secret = Zeroizing<Vec<u8>>;

fn strip_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

fn from_file(var: &str, path: &str) -> Result<Secret, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::usage(format!("{var}: cannot read {path}: {e}")))?;
    Ok(Zeroizing::new(strip_newline(bytes)))
}

fn from_command(var: &str, cmd: &str) -> Result<Secret, CliError> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| CliError::usage(format!("{var}: cannot run the command: {e}")))?;
    if !out.status.success() {
        return Err(CliError::usage(format!("{var}: the command failed ({})", out.status)));
    }
    Ok(Zeroizing::new(strip_newline(out.stdout)))
}

fn prompt(label: &str) -> Result<Secret, CliError> {
    let p = rpassword::prompt_password(label).map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?;
    Ok(Zeroizing::new(p.into_bytes()))
}

/// The password that opens the repository.
pub fn repository_password() -> Result<Secret, CliError> {
    lookup("SNAP_PASSWORD", "Repository password: ")
}

/// The password of the destination of `snap copy`: `SNAP_TO_PASSWORD_FILE`,
/// `SNAP_TO_PASSWORD_COMMAND`, `SNAP_TO_PASSWORD`, or asked.
pub fn destination_password() -> Result<Secret, CliError> {
    lookup("SNAP_TO_PASSWORD", "Destination repository password: ")
}

fn lookup(prefix: &str, label: &str) -> Result<Secret, CliError> {
    let file_var = format!("{prefix}_FILE");
    let cmd_var = format!("{prefix}_COMMAND");
    if let Ok(path) = std::env::var(&file_var) {
        return non_empty(from_file(&file_var, &path)?, &file_var);
    }
    if let Ok(cmd) = std::env::var(&cmd_var) {
        return non_empty(from_command(&cmd_var, &cmd)?, &cmd_var);
    }
    if let Ok(p) = std::env::var(prefix) {
        return non_empty(Zeroizing::new(p.into_bytes()), prefix);
    }
    if std::io::stdin().is_terminal() {
        return prompt(label);
    }
    Err(CliError::usage(format!(
        "no password given: set {file_var}, {cmd_var} or {prefix}, or run on a terminal to be asked"
    )))
}

fn non_empty(s: Secret, var: &str) -> Result<Secret, CliError> {
    if s.is_empty() {
        return Err(CliError::usage(format!("{var} gives an empty password")));
    }
    Ok(s)
}

/// A new password (for `init`, `key add`, `key passwd`): from
/// `SNAP_NEW_PASSWORD_FILE`, `_COMMAND` or `SNAP_NEW_PASSWORD`, else asked
/// twice on a terminal. `init` falls back to the repository password.
pub fn new_password(fallback_to_repository: bool) -> Result<Secret, CliError> {
    let has_new = ["SNAP_NEW_PASSWORD_FILE", "SNAP_NEW_PASSWORD_COMMAND", "SNAP_NEW_PASSWORD"]
        .iter()
        .any(|v| std::env::var(v).is_ok());
    if has_new {
        return lookup("SNAP_NEW_PASSWORD", "");
    }
    if fallback_to_repository {
        let has_repo =
            ["SNAP_PASSWORD_FILE", "SNAP_PASSWORD_COMMAND", "SNAP_PASSWORD"].iter().any(|v| std::env::var(v).is_ok());
        if has_repo {
            return repository_password();
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage("no new password given: set SNAP_NEW_PASSWORD_FILE or SNAP_NEW_PASSWORD"));
    }
    let a = prompt("New password: ")?;
    if a.is_empty() {
        return Err(CliError::usage("empty password refused"));
    }
    let b = prompt("Repeat the new password: ")?;
    if *a != *b {
        return Err(CliError::usage("the two passwords differ"));
    }
    Ok(a)
}
