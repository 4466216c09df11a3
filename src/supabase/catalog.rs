//! What the database holds, read from the catalogs inside the backup's
//! snapshot: tables to stream, sequences, materialised views, large
//! objects, extensions, and facts about the server and the connection.

use serde::Serialize;
use tokio_postgres::Client;

use super::error::{SupabaseError, SupabaseResult};
use super::platform;

#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: i32,
    pub database: String,
    pub user: String,
    pub superuser: bool,
    /// Whether role passwords (pg_authid) are readable.
    pub can_read_passwords: bool,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        (self.version_num / 10000) as u32
    }
}

pub async fn server_info(c: &Client) -> SupabaseResult<ServerInfo> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4,
                    current_database()::text, current_user::text,
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    has_table_privilege('pg_catalog.pg_authid', 'SELECT')",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(ServerInfo {
        version: row.get(0),
        version_num: row.get(1),
        database: row.get(2),
        user: row.get(3),
        superuser: row.get(4),
        can_read_passwords: row.get(5),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub schema: String,
}

pub async fn extensions(c: &Client) -> SupabaseResult<Vec<Extension>> {
    let rows = c
        .query(
            "SELECT e.extname::text, e.extversion, n.nspname::text FROM pg_extension e
             JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows.iter().map(|r| Extension { name: r.get(0), version: r.get(1), schema: r.get(2) }).collect())
}

/// A table whose rows are streamed.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// Columns COPY writes and reads (not dropped, not generated).
    pub columns: Vec<String>,
    /// `WHERE` condition of an extension configuration table.
    pub filter: Option<String>,
    pub partition_of: Option<String>,
    pub readable: bool,
    /// Size of its heap as of the last VACUUM or ANALYZE (0 if never):
    /// read from pg_class, which takes no lock.
    pub estimated_bytes: u64,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Settings under which COPY text is written, whatever the server's,
/// database's or role's defaults (as pg_dump sets them): dates in ISO form,
/// since a `SQL, DMY` style would be read back in the target's day/month
/// order; intervals in the style every server parses; floats with every
/// digit. `SET LOCAL`, so they hold for the whole transaction even through
/// a transaction pooler.
pub const COPY_TEXT_SETTINGS: &str =
    "SET LOCAL DateStyle = ISO; SET LOCAL IntervalStyle = postgres; SET LOCAL extra_float_digits = 3";

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every ordinary table (and leaf partition) whose rows belong in a backup:
/// user schemas and the platform schemas that hold user data, minus the
/// platform's migrator tables and tables that extensions own (unless they
/// are extension configuration tables, whose rows are the user's).
pub async fn data_tables(c: &Client) -> SupabaseResult<Vec<Table>> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text,
                    ARRAY(SELECT a.attname::text FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                          ORDER BY a.attnum),
                    ext.member, ext.condition,
                    (SELECT pn.nspname || '.' || pc.relname FROM pg_inherits h
                       JOIN pg_class pc ON pc.oid = h.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                       WHERE h.inhrelid = c.oid AND c.relispartition LIMIT 1),
                    has_table_privilege(c.oid, 'SELECT'),
                    c.relpages::int8 * current_setting('block_size')::int8
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN LATERAL (
                 SELECT true AS member,
                        (SELECT (e.extcondition)[array_position(e.extconfig, c.oid)]
                         FROM pg_extension e WHERE e.oid = d.refobjid AND c.oid = ANY (e.extconfig)) AS condition,
                        (SELECT c.oid = ANY (e.extconfig) FROM pg_extension e WHERE e.oid = d.refobjid) AS config
                 FROM pg_depend d
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
                 LIMIT 1) ext ON true
             WHERE c.relkind = 'r' AND c.relpersistence <> 't'
               AND (ext.member IS NULL OR ext.config)
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    let mut out = Vec::new();
    for r in rows {
        let schema: String = r.get(0);
        let name: String = r.get(1);
        if !platform::table_data_wanted(&schema, &name) {
            continue;
        }
        let condition: Option<String> = r.get(4);
        out.push(Table {
            schema,
            name,
            columns: r.get(2),
            filter: condition.filter(|c| !c.trim().is_empty()),
            partition_of: r.get(5),
            readable: r.get(6),
            estimated_bytes: r.get::<_, i64>(7).max(0) as u64,
        });
    }
    Ok(out)
}

/// Sequences in the schemas whose data is backed up, with their values:
/// (schema, name, value, is_called). A sequence never used has no last
/// value; it is set back to its start, not called.
pub async fn sequence_values(c: &Client) -> SupabaseResult<Vec<(String, String, i64, bool)>> {
    let rows = c
        .query(
            "SELECT s.schemaname::text, s.sequencename::text, coalesce(s.last_value, s.start_value), s.last_value IS NOT NULL
             FROM pg_sequences s
             JOIN pg_namespace n ON n.nspname = s.schemaname
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
             WHERE has_schema_privilege(n.oid, 'USAGE') AND has_sequence_privilege(c.oid, 'SELECT')
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2), r.get::<_, bool>(3)))
        .filter(|(schema, ..)| {
            !platform::is_platform_schema(schema) || platform::DATA_PLATFORM_SCHEMAS.contains(&schema.as_str())
        })
        .collect())
}

/// Populated materialised views outside platform schemas, oldest first
/// (creation order respects dependencies between them).
pub async fn materialized_views(c: &Client) -> SupabaseResult<Vec<(String, String)>> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'm' AND c.relispopulated ORDER BY c.oid",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, _)| !platform::is_platform_schema(s))
        .collect())
}

/// Large objects: oid and owner.
pub async fn large_objects(c: &Client) -> SupabaseResult<Vec<(i64, String)>> {
    let rows = c
        .query("SELECT oid::int8, pg_get_userbyid(lomowner)::text FROM pg_largeobject_metadata ORDER BY oid", &[])
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Schemas present in the database, split into the user's and the platform's.
pub async fn schemas(c: &Client) -> SupabaseResult<(Vec<String>, Vec<String>)> {
    let rows = c.query("SELECT nspname::text FROM pg_namespace ORDER BY 1", &[]).await.map_err(SupabaseError::db)?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let (platform, user): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| platform::is_platform_schema(n));
    let platform = platform.into_iter().filter(|n| !n.starts_with("pg_") && n != "information_schema").collect();
    Ok((user, platform))
}

/// Login roles the user created, which need a password set after a restore
/// made without passwords.
pub async fn user_login_roles(c: &Client) -> SupabaseResult<Vec<String>> {
    let rows = c
        .query("SELECT rolname::text FROM pg_roles WHERE rolcanlogin ORDER BY 1", &[])
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).filter(|r| !platform::is_reserved_role(r)).collect())
}

/// An object in a platform schema that the platform did not create, found
/// by general rules rather than by name: owned by a role that is not a
/// platform role; a trigger whose function is the user's; any row-level
/// security policy (the platform ships none on its tables); an index that
/// backs no constraint and was not created by the table's platform owner's
/// migrations (its owner cannot tell, so these are reported as candidates).
#[derive(Debug, Clone, Serialize)]
pub struct PlatformUserObject {
    pub kind: String,
    pub schema: String,
    pub name: String,
    /// Why it is considered the user's.
    pub reason: String,
}

pub async fn platform_user_objects(c: &Client) -> SupabaseResult<Vec<PlatformUserObject>> {
    let rows = c
        .query(
            "SELECT 'relation:' || c.relkind::text, n.nspname::text, c.relname::text, 'owner ' || pg_get_userbyid(c.relowner)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r','v','m','p','S','f','c') AND NOT EXISTS
                    (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
                    AND pg_get_userbyid(c.relowner) NOT LIKE ALL (ARRAY['supabase%', 'postgres', 'pg_%', 'pgsodium%'])
             UNION ALL
             SELECT 'function', n.nspname::text, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                    'owner ' || pg_get_userbyid(p.proowner)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
                    AND pg_get_userbyid(p.proowner) NOT LIKE ALL (ARRAY['supabase%', 'pg_%', 'pgsodium%'])
             UNION ALL
             SELECT 'trigger', n.nspname::text, c.relname || '.' || t.tgname,
                    'calls ' || pn.nspname || '.' || p.proname || ' owned by ' || pg_get_userbyid(p.proowner)
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
              WHERE NOT t.tgisinternal
                    AND (pg_get_userbyid(p.proowner) NOT LIKE ALL (ARRAY['supabase%', 'pg_%'])
                         OR pn.nspname <> n.nspname)
             UNION ALL
             SELECT 'policy', n.nspname::text, c.relname || '.' || pol.polname, 'row-level security policy'
               FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             UNION ALL
             SELECT 'index', n.nspname::text, ic.relname::text, 'index backing no constraint'
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
             ORDER BY 2, 1, 3",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows
        .iter()
        .map(|r| PlatformUserObject { kind: r.get(0), schema: r.get(1), name: r.get(2), reason: r.get(3) })
        .filter(|o| {
            platform::is_platform_schema(&o.schema) && !o.schema.starts_with("pg_") && o.schema != "information_schema"
        })
        .collect())
}

/// Platform schemas and tables the connection cannot read. pg_dump locks
/// every table it describes, so these must be left out of the platform
/// schema dump (and are recorded as such).
pub async fn unreadable_platform_objects(c: &Client) -> SupabaseResult<(Vec<String>, Vec<(String, String)>)> {
    let rows = c
        .query("SELECT nspname::text FROM pg_namespace WHERE NOT has_schema_privilege(oid, 'USAGE') ORDER BY 1", &[])
        .await
        .map_err(SupabaseError::db)?;
    let schemas: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|s| platform::is_platform_schema(s) && !s.starts_with("pg_") && s != "information_schema")
        .collect();
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') AND has_schema_privilege(n.oid, 'USAGE')
               AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    let tables = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, _)| platform::is_platform_schema(s))
        .collect();
    Ok((schemas, tables))
}

/// The platform's schema versions, from its migrators' own tables: a
/// restore into a project whose versions differ may meet other columns.
pub async fn platform_versions(c: &Client) -> SupabaseResult<serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (key, sql) in [
        ("auth", "SELECT max(version)::text FROM auth.schema_migrations"),
        (
            "storage",
            "SELECT max(name)::text FROM storage.migrations WHERE id = (SELECT max(id) FROM storage.migrations)",
        ),
    ] {
        let table = if key == "auth" { "auth.schema_migrations" } else { "storage.migrations" };
        let readable: bool = c
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL AND has_table_privilege(to_regclass($1), 'SELECT')",
                &[&table],
            )
            .await
            .map_err(SupabaseError::db)?
            .get(0);
        if readable {
            let v: Option<String> = c.query_one(sql, &[]).await.map_err(SupabaseError::db)?.get(0);
            out.insert(key.to_string(), serde_json::json!(v));
        }
    }
    Ok(serde_json::Value::Object(out))
}

/// Roles, memberships, grants, policies and triggers the user made, as
/// sorted lists of text: captured at backup, compared by `snap verify`.
/// Grants a table's owner holds on it are left out (restore may change a
/// platform owner to the restoring role).
pub async fn security_catalog(c: &Client) -> SupabaseResult<serde_json::Value> {
    let queries = [
        (
            "roles",
            "SELECT format('%s login=%s inherit=%s createrole=%s createdb=%s connlimit=%s config=%s', rolname, rolcanlogin,
                    rolinherit, rolcreaterole, rolcreatedb, rolconnlimit, rolconfig) AS x, rolname::text AS r FROM pg_roles",
        ),
        (
            "memberships",
            "SELECT format('%s in %s', m.rolname, r.rolname) AS x, m.rolname::text AS r FROM pg_auth_members a
             JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member",
        ),
        (
            "grants",
            "SELECT format('%s %s on %I.%I', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                    a.privilege_type, n.nspname, c.relname) AS x,
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS r
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND a.grantee <> c.relowner
               AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'",
        ),
        (
            "policies",
            "SELECT format('%I.%I %s %s %s using=%s check=%s', schemaname, tablename, policyname, cmd, roles, qual, with_check) AS x,
                    ''::text AS r FROM pg_policies",
        ),
        (
            "triggers",
            "SELECT pg_get_triggerdef(t.oid) AS x, ''::text AS r FROM pg_trigger t WHERE NOT t.tgisinternal",
        ),
    ];
    let mut out = serde_json::Map::new();
    for (key, q) in queries {
        let rows = c.query(&format!("SELECT x, r FROM ({q}) s ORDER BY x"), &[]).await.map_err(SupabaseError::db)?;
        let items: Vec<String> = rows
            .iter()
            .filter(|row| {
                let r: String = row.get(1);
                // Platform roles and what they hold belong to the platform,
                // except privileges granted to them (user configuration).
                key == "grants" || r.is_empty() || !platform::is_reserved_role(&r)
            })
            .map(|row| row.get::<_, String>(0))
            .collect();
        out.insert(key.to_string(), serde_json::json!(items));
    }
    Ok(serde_json::Value::Object(out))
}

/// A foreign key: (schema, table) of the referencing and referenced
/// tables, with their columns (quoted) in key order.
pub struct ForeignKey {
    pub name: String,
    pub child: (String, String),
    pub parent: (String, String),
    pub child_columns: Vec<String>,
    pub parent_columns: Vec<String>,
}

pub async fn foreign_keys(c: &Client) -> SupabaseResult<Vec<ForeignKey>> {
    let rows = c
        .query(
            "SELECT k.conname::text, cn.nspname::text, cc.relname::text, pn.nspname::text, pc.relname::text,
                    ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o),
                    ARRAY(SELECT quote_ident(a.attname) FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
                          JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o)
             FROM pg_constraint k
             JOIN pg_class cc ON cc.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
             JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE k.contype = 'f'",
            &[],
        )
        .await
        .map_err(SupabaseError::db)?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            child: (r.get(1), r.get(2)),
            parent: (r.get(3), r.get(4)),
            child_columns: r.get(5),
            parent_columns: r.get(6),
        })
        .collect())
}
