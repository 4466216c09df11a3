//! Reading the SQL that pg_dump writes: splitting it into statements (with
//! quotes, dollar quotes and comments respected) and sorting statements
//! into the sections a restore runs them in.

/// Split SQL text into statements, each without its trailing `;`, with
/// comment-only and empty pieces dropped. psql meta-commands (lines
/// starting with `\` between statements) are dropped too.
pub fn split_statements(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut has_code = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                i += 2;
                while i < b.len() && depth > 0 {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 1;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            b'\\' if !has_code => {
                // A psql meta-command line between statements.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                start = i;
                continue;
            }
            b'\'' | b'"' => {
                has_code = true;
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'$' => {
                has_code = true;
                if let Some(tag_len) = dollar_tag(&b[i..]) {
                    let tag = &b[i..i + tag_len];
                    let body_start = i + tag_len;
                    match find(&b[body_start..], tag) {
                        Some(p) => i = body_start + p + tag_len - 1,
                        None => i = b.len() - 1,
                    }
                }
            }
            b';' => {
                let stmt = text[start..i].trim();
                if has_code && !stmt.is_empty() {
                    out.push(strip_leading_comments(stmt).to_string());
                }
                start = i + 1;
                has_code = false;
            }
            c if !c.is_ascii_whitespace() => has_code = true,
            _ => {}
        }
        i += 1;
    }
    let rest = text[start.min(text.len())..].trim();
    if has_code && !rest.is_empty() {
        out.push(strip_leading_comments(rest).to_string());
    }
    out
}

/// `$tag$` at the start of `b`: its length, if it is one.
fn dollar_tag(b: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        if j == 1 && b[j].is_ascii_digit() {
            return None; // $1 is a parameter, not a quote
        }
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn strip_leading_comments(s: &str) -> &str {
    let mut s = s.trim_start();
    while s.starts_with("--") {
        s = match s.find('\n') {
            Some(p) => s[p + 1..].trim_start(),
            None => "",
        };
    }
    s
}

/// Where a statement of pg_dump's schema output runs in a restore: before
/// the data (definitions) or after it (indexes, constraints, triggers,
/// rules, policies), as pg_restore's sections do. Loading rows before the
/// constraints and triggers exist is faster and cannot trip over load
/// order; the constraints then check the loaded rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    PreData,
    PostData,
}

pub fn section(stmt: &str) -> Section {
    let s = normalize_head(stmt, 200);
    let post = s.starts_with("CREATE INDEX")
        || s.starts_with("CREATE UNIQUE INDEX")
        || s.starts_with("CREATE TRIGGER")
        || s.starts_with("CREATE CONSTRAINT TRIGGER")
        || s.starts_with("CREATE OR REPLACE TRIGGER")
        || s.starts_with("CREATE RULE")
        || s.starts_with("CREATE POLICY")
        || s.starts_with("CREATE EVENT TRIGGER")
        || s.starts_with("ALTER INDEX")
        || (s.starts_with("ALTER TABLE") && (s.contains(" ADD CONSTRAINT ") || s.contains(" CLUSTER ON ")))
        || (s.starts_with("ALTER TABLE") && s.contains(" ENABLE ROW LEVEL SECURITY"))
        || (s.starts_with("ALTER TABLE") && s.contains(" FORCE ROW LEVEL SECURITY"))
        || (s.starts_with("ALTER TABLE") && s.contains(" REPLICA IDENTITY "))
        || (s.starts_with("ALTER TABLE") && (s.contains(" ENABLE TRIGGER") || s.contains(" DISABLE TRIGGER")))
        || (s.starts_with("ALTER PUBLICATION") && s.contains(" ADD TABLE"))
        || (s.starts_with("COMMENT ON")
            && (s.contains(" CONSTRAINT ")
                || s.contains(" TRIGGER ")
                || s.contains(" POLICY ")
                || s.starts_with("COMMENT ON INDEX")))
        || s.starts_with("REFRESH MATERIALIZED VIEW");
    if post {
        Section::PostData
    } else {
        Section::PreData
    }
}

/// The statement's first `max` characters, upper-cased outside quoted
/// names, with white space folded: enough to recognise what it is.
pub fn normalize_head(stmt: &str, max: usize) -> String {
    let mut out = String::with_capacity(max);
    let mut in_quote = false;
    let mut last_space = false;
    for ch in stmt.chars() {
        if out.len() >= max {
            break;
        }
        if ch == '"' {
            in_quote = !in_quote;
            out.push(ch);
            last_space = false;
        } else if ch.is_whitespace() && !in_quote {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
        } else {
            if in_quote {
                out.push(ch);
            } else {
                out.extend(ch.to_uppercase());
            }
            last_space = false;
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_quotes_dollar_quotes_and_comments() {
        let sql = "--\n-- Name: f\n--\nCREATE FUNCTION f() RETURNS int AS $_$ SELECT 1; $_$;\n\
                   \\restrict abc\nSET x = 'a;b';\nCOMMENT ON TABLE \"t;\" IS 'it''s; fine';\n/* c; */ SELECT $1;\n";
        let st = split_statements(sql);
        assert_eq!(st.len(), 4, "{st:?}");
        assert!(st[0].starts_with("CREATE FUNCTION") && st[0].ends_with("$_$"));
        assert_eq!(st[1], "SET x = 'a;b'");
        assert!(st[2].contains("'it''s; fine'"));
        assert_eq!(st[3], "/* c; */ SELECT $1");
    }

    #[test]
    fn sections_follow_pg_restore() {
        assert_eq!(section("CREATE TABLE \"public\".\"t\" (a int)"), Section::PreData);
        assert_eq!(
            section("ALTER TABLE ONLY \"public\".\"t\"\n    ADD CONSTRAINT \"t_pkey\" PRIMARY KEY (a)"),
            Section::PostData
        );
        assert_eq!(
            section("CREATE TRIGGER \"x\" AFTER INSERT ON \"auth\".\"users\" FOR EACH ROW EXECUTE FUNCTION f()"),
            Section::PostData
        );
        assert_eq!(section("ALTER TABLE \"public\".\"t\" ENABLE ROW LEVEL SECURITY"), Section::PostData);
        assert_eq!(section("ALTER TABLE \"public\".\"t\" OWNER TO \"postgres\""), Section::PreData);
        assert_eq!(normalize_head("alter  table \"Ab\"\n owner", 100), "ALTER TABLE \"Ab\" OWNER");
    }
}
