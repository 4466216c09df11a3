//! What a restore must not run as the platform's non-superuser `postgres`,
//! and how it rewrites what it can: one table of rules, each named after
//! the real failure it prevents (../shared/SUPABASE.md), each tested.
//!
//! A rule sees one statement of a dump (roles, schema or platform schema)
//! and says keep, rewrite or skip. Skips are reported to the user unless
//! they are pure noise (the statement would be a no-op).

use std::sync::OnceLock;

use regex::Regex;

use super::platform::is_reserved_role;
use super::sql::normalize_head;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Roles,
    Schema,
    Platform,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Rewrite(String),
    /// Not run; the reason is shown when `notice` is true.
    Skip {
        rule: &'static str,
        notice: bool,
    },
}

pub struct Context<'a> {
    /// The role the restore connects as (normally `postgres`).
    pub me: &'a str,
}

/// Role settings users may put on platform roles (the Supabase CLI keeps these).
const ALLOWED_RESERVED_SETTINGS: &[&str] =
    &["pgaudit.", "pgrst.", "session_replication_role", "statement_timeout", "track_io_timing"];

struct Rule {
    name: &'static str,
    streams: &'static [Stream],
    apply: fn(&str, &str, &Context) -> Option<Verdict>,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid rule pattern"))
}

fn ident(s: &str) -> String {
    s.trim_matches('"').replace("\"\"", "\"")
}

/// Skips as rules return them; `judge` names them after the rule.
const NOTICE: Verdict = Verdict::Skip { rule: "", notice: true };
const QUIET: Verdict = Verdict::Skip { rule: "", notice: false };

fn skip() -> Option<Verdict> {
    Some(NOTICE)
}

fn quiet() -> Option<Verdict> {
    Some(QUIET)
}

/// `head` is the statement's normalised head (upper-cased outside quotes).
const RULES: &[Rule] = &[
    Rule {
        // "role already exists" / permission denied creating platform roles.
        name: "platform roles are never created or altered",
        streams: &[Stream::Roles],
        apply: |stmt, _head, _cx| {
            static R: OnceLock<Regex> = OnceLock::new();
            let r = re(&R, r#"(?is)^(CREATE|ALTER)\s+ROLE\s+("(?:[^"]|"")+"|\w+)(.*)$"#);
            let c = r.captures(stmt)?;
            let role = ident(&c[2]);
            if !is_reserved_role(&role) {
                return None;
            }
            let rest = c[3].trim_start();
            if c[1].eq_ignore_ascii_case("ALTER") && rest.to_ascii_uppercase().starts_with("SET ") {
                let setting = rest[4..].trim_start().trim_matches('"');
                if ALLOWED_RESERVED_SETTINGS.iter().any(|p| setting.starts_with(p)) {
                    return Some(Verdict::Keep);
                }
            }
            quiet()
        },
    },
    Rule {
        // "must be superuser to change bypassrls attribute" (failure 1), and
        // SUPERUSER/REPLICATION likewise; CREATE ROLE made idempotent
        // (failure 5: "role already exists" on a second restore).
        name: "role attributes only a superuser may set are dropped; CREATE ROLE is idempotent",
        streams: &[Stream::Roles],
        apply: |stmt, _head, _cx| {
            static C: OnceLock<Regex> = OnceLock::new();
            static A: OnceLock<Regex> = OnceLock::new();
            static ATTR: OnceLock<Regex> = OnceLock::new();
            let attrs = re(&ATTR, r"(?i)\s+(NO)?(SUPERUSER|BYPASSRLS|REPLICATION)\b");
            if let Some(c) = re(&C, r#"(?is)^CREATE\s+ROLE\s+("(?:[^"]|"")+"|\w+)\s*$"#).captures(stmt) {
                let role = ident(&c[1]);
                return Some(Verdict::Rewrite(format!(
                    "DO $snap$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN CREATE ROLE {}; END IF; END $snap$",
                    super::catalog::quote_literal(&role),
                    super::catalog::quote_ident(&role)
                )));
            }
            if re(&A, r#"(?is)^ALTER\s+ROLE\s+("(?:[^"]|"")+"|\w+)\s+WITH\s"#).is_match(stmt) && attrs.is_match(stmt) {
                let cleaned = attrs.replace_all(stmt, "").to_string();
                return Some(Verdict::Rewrite(cleaned));
            }
            None
        },
    },
    Rule {
        // Granting membership to platform roles is reserved to the platform,
        // and naming another grantor needs superuser.
        name: "no role membership is granted to platform roles",
        streams: &[Stream::Roles],
        apply: |stmt, _head, _cx| {
            static G: OnceLock<Regex> = OnceLock::new();
            let r = re(&G, r#"(?is)^GRANT\s+("(?:[^"]|"")+"|\w+)\s+TO\s+("(?:[^"]|"")+"|\w+)(.*)$"#);
            let c = r.captures(stmt)?;
            if is_reserved_role(&ident(&c[2])) {
                return quiet();
            }
            static BY: OnceLock<Regex> = OnceLock::new();
            let by = re(&BY, r#"(?i)\s+GRANTED\s+BY\s+("(?:[^"]|"")+"|\w+)"#);
            if by.is_match(&c[3]) {
                return Some(Verdict::Rewrite(by.replace_all(stmt, "").to_string()));
            }
            None
        },
    },
    Rule {
        // "must be member of role supabase_admin" (failure 2).
        name: "objects owned by platform roles stay owned by the restoring role",
        streams: &[Stream::Schema, Stream::Platform],
        apply: |stmt, head, cx| {
            if !head.starts_with("ALTER ") || !head.contains(" OWNER TO ") {
                return None;
            }
            static O: OnceLock<Regex> = OnceLock::new();
            let r = re(&O, r#"(?is)\sOWNER\s+TO\s+("(?:[^"]|"")+"|\w+)\s*$"#);
            let owner = ident(&r.captures(stmt)?[1]);
            if owner == cx.me {
                return quiet();
            }
            if is_reserved_role(&owner) {
                return skip();
            }
            None
        },
    },
    Rule {
        // "permission denied" for default privileges of supabase_admin.
        name: "default privileges of platform roles are left to the platform",
        streams: &[Stream::Schema, Stream::Platform],
        apply: |stmt, head, cx| {
            if !head.starts_with("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
                return None;
            }
            static D: OnceLock<Regex> = OnceLock::new();
            let r = re(&D, r#"(?is)^ALTER\s+DEFAULT\s+PRIVILEGES\s+FOR\s+ROLE\s+("(?:[^"]|"")+"|\w+)"#);
            let role = ident(&r.captures(stmt)?[1]);
            (role != cx.me && is_reserved_role(&role)).then_some(QUIET)
        },
    },
    Rule {
        // pg_dumpall (15+) dumps privileges on server parameters, which only
        // a superuser grants: "permission denied for parameter".
        name: "privileges on server parameters are the platform's",
        streams: &[Stream::Roles],
        apply: |_stmt, head, _cx| {
            ((head.starts_with("GRANT ") || head.starts_with("REVOKE ")) && head.contains(" ON PARAMETER "))
                .then_some(QUIET)
        },
    },
    Rule {
        // Event triggers need superuser.
        name: "event triggers need a superuser",
        streams: &[Stream::Schema, Stream::Platform],
        apply: |_stmt, head, _cx| {
            let event = head.starts_with("CREATE EVENT TRIGGER")
                || head.starts_with("ALTER EVENT TRIGGER")
                || head.starts_with("COMMENT ON EVENT TRIGGER");
            event.then_some(NOTICE)
        },
    },
    Rule {
        // SET SESSION AUTHORIZATION needs superuser; the grants it wraps run as us.
        name: "session authorization stays the restoring role",
        streams: &[Stream::Schema, Stream::Platform, Stream::Roles],
        apply: |_stmt, head, _cx| {
            (head.starts_with("SET SESSION AUTHORIZATION") || head.starts_with("RESET SESSION AUTHORIZATION"))
                .then_some(QUIET)
        },
    },
    Rule {
        // "grant options cannot be granted back to your own grantor".
        name: "no grants to the restoring role itself",
        streams: &[Stream::Schema, Stream::Platform],
        apply: |stmt, head, cx| {
            if !head.starts_with("GRANT ") && !head.starts_with("REVOKE ") {
                return None;
            }
            static T: OnceLock<Regex> = OnceLock::new();
            let r = re(&T, r#"(?is)\s(?:TO|FROM)\s+("(?:[^"]|"")+"|\w+)(?:\s+WITH\s+GRANT\s+OPTION)?\s*$"#);
            let grantee = ident(&r.captures(stmt)?[1]);
            (grantee == cx.me).then_some(QUIET)
        },
    },
    Rule {
        // The platform owns these; they exist in every project.
        name: "platform-owned objects are not recreated",
        streams: &[Stream::Schema],
        apply: |_stmt, head, _cx| {
            let platform = head.starts_with("CREATE PUBLICATION \"supabase_realtime\"")
                || head.starts_with("ALTER PUBLICATION \"supabase_realtime\" OWNER")
                || head.starts_with("COMMENT ON EXTENSION")
                || head.starts_with("ALTER FOREIGN DATA WRAPPER") && head.contains(" OWNER TO ");
            platform.then_some(QUIET)
        },
    },
    Rule {
        // PG17's pg_dump sets transaction_timeout, unknown to older servers.
        name: "settings newer servers know are not sent",
        streams: &[Stream::Schema, Stream::Platform, Stream::Roles],
        apply: |_stmt, head, _cx| head.starts_with("SET TRANSACTION_TIMEOUT").then_some(QUIET),
    },
    Rule {
        // "schema public already exists" and re-runs.
        name: "schemas are created if missing",
        streams: &[Stream::Schema, Stream::Platform],
        apply: |stmt, head, _cx| {
            if head.starts_with("CREATE SCHEMA ") && !head.starts_with("CREATE SCHEMA IF NOT EXISTS") {
                static S: OnceLock<Regex> = OnceLock::new();
                let r = re(&S, r"(?is)^CREATE\s+SCHEMA\s+");
                return Some(Verdict::Rewrite(r.replace(stmt, "CREATE SCHEMA IF NOT EXISTS ").to_string()));
            }
            if head.starts_with("CREATE EXTENSION ") && !head.starts_with("CREATE EXTENSION IF NOT EXISTS") {
                static E: OnceLock<Regex> = OnceLock::new();
                let r = re(&E, r"(?is)^CREATE\s+EXTENSION\s+");
                return Some(Verdict::Rewrite(r.replace(stmt, "CREATE EXTENSION IF NOT EXISTS ").to_string()));
            }
            None
        },
    },
];

/// The verdict for one statement of `stream`.
pub fn judge(stream: Stream, stmt: &str, cx: &Context) -> Verdict {
    let head = normalize_head(stmt, 400);
    let mut current: Option<String> = None;
    for rule in RULES.iter().filter(|r| r.streams.contains(&stream)) {
        let text = current.as_deref().unwrap_or(stmt);
        let h = if current.is_some() { normalize_head(text, 400) } else { head.clone() };
        match (rule.apply)(text, &h, cx) {
            None | Some(Verdict::Keep) => {}
            Some(Verdict::Rewrite(s)) => current = Some(s),
            Some(Verdict::Skip { notice, .. }) => return Verdict::Skip { rule: rule.name, notice },
        }
    }
    match current {
        Some(s) => Verdict::Rewrite(s),
        None => Verdict::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(stream: Stream, s: &str) -> Verdict {
        judge(stream, s, &Context { me: "postgres" })
    }

    fn skipped(v: &Verdict) -> bool {
        matches!(v, Verdict::Skip { .. })
    }

    /// Each case is a statement that failed in a real restore on a
    /// Supabase-like target (../shared/SUPABASE.md), or its twin.
    #[test]
    fn real_failures_are_prevented() {
        // 1. must be superuser to change bypassrls attribute
        let v = j(Stream::Roles, "ALTER ROLE \"app_reader\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5");
        assert_eq!(
            v,
            Verdict::Rewrite(
                "ALTER ROLE \"app_reader\" WITH INHERIT NOCREATEROLE NOCREATEDB LOGIN CONNECTION LIMIT 5".into()
            )
        );
        // 2. must be member of role "supabase_admin"
        assert!(skipped(&j(Stream::Schema, "ALTER TABLE \"public\".\"legacy_notes\" OWNER TO \"supabase_admin\"")));
        assert_eq!(j(Stream::Schema, "ALTER TABLE \"public\".\"t\" OWNER TO \"app_writers\""), Verdict::Keep);
        // 5. role already exists (second restore)
        match j(Stream::Roles, "CREATE ROLE \"app_reader\"") {
            Verdict::Rewrite(s) => assert!(s.contains("IF NOT EXISTS") && s.contains("'app_reader'")),
            v => panic!("{v:?}"),
        }
        // platform roles: never created, altered, or granted membership
        assert!(skipped(&j(Stream::Roles, "CREATE ROLE \"anon\"")));
        assert!(skipped(&j(Stream::Roles, "ALTER ROLE \"supabase_admin\" WITH SUPERUSER")));
        assert!(skipped(&j(Stream::Roles, "GRANT \"app_writers\" TO \"authenticator\" GRANTED BY \"supabase_admin\"")));
        assert_eq!(
            j(Stream::Roles, "ALTER ROLE \"authenticator\" SET \"pgrst.db_schemas\" TO 'public, api'"),
            Verdict::Keep
        );
        assert!(skipped(&j(Stream::Roles, "ALTER ROLE \"authenticator\" SET \"search_path\" TO 'x'")));
        assert_eq!(
            j(Stream::Roles, "GRANT \"app_writers\" TO \"app_reader\" GRANTED BY \"supabase_admin\""),
            Verdict::Rewrite("GRANT \"app_writers\" TO \"app_reader\"".into())
        );
        // ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin; event triggers
        assert!(skipped(&j(
            Stream::Schema,
            "ALTER DEFAULT PRIVILEGES FOR ROLE \"supabase_admin\" IN SCHEMA \"public\" GRANT ALL ON TABLES TO \"anon\""
        )));
        assert_eq!(
            j(
                Stream::Schema,
                "ALTER DEFAULT PRIVILEGES FOR ROLE \"postgres\" IN SCHEMA \"public\" GRANT ALL ON TABLES TO \"anon\""
            ),
            Verdict::Keep
        );
        assert!(skipped(&j(
            Stream::Schema,
            "CREATE EVENT TRIGGER \"issue_pg_cron_access\" ON ddl_command_end EXECUTE FUNCTION f()"
        )));
        // grant options cannot be granted back to your own grantor
        assert!(skipped(&j(Stream::Schema, "GRANT ALL ON TABLE \"public\".\"t\" TO \"postgres\" WITH GRANT OPTION")));
        assert_eq!(j(Stream::Schema, "GRANT SELECT ON TABLE \"public\".\"t\" TO \"anon\""), Verdict::Keep);
        assert!(skipped(&j(Stream::Schema, "SET SESSION AUTHORIZATION \"supabase_admin\"")));
        // permission denied for parameter session_replication_role
        assert!(skipped(&j(Stream::Roles, "GRANT SET ON PARAMETER \"session_replication_role\" TO \"postgres\"")));
        // the realtime publication exists on every project; transaction_timeout
        assert!(skipped(&j(
            Stream::Schema,
            "CREATE PUBLICATION \"supabase_realtime\" WITH (publish = 'insert, update, delete, truncate')"
        )));
        assert!(skipped(&j(Stream::Schema, "SET transaction_timeout = 0")));
        // schema "public" already exists
        assert_eq!(
            j(Stream::Schema, "CREATE SCHEMA \"api\""),
            Verdict::Rewrite("CREATE SCHEMA IF NOT EXISTS \"api\"".into())
        );
    }
}
