//! What belongs to the Supabase platform rather than to the user: reserved
//! roles, platform schemas, and the platform's own migrator tables. These
//! are facts about the platform (see ../shared/SUPABASE.md), kept in one
//! place; they never list the user's objects.

/// Roles the platform creates and manages.
pub const RESERVED_ROLES: &[&str] = &[
    "anon",
    "authenticated",
    "authenticator",
    "service_role",
    "dashboard_user",
    "pgbouncer",
    "postgres",
    "pgsodium_keyholder",
    "pgsodium_keyiduser",
    "pgsodium_keymaker",
    "pgtle_admin",
];

pub fn is_reserved_role(name: &str) -> bool {
    RESERVED_ROLES.contains(&name)
        || name.starts_with("supabase_")
        || name.starts_with("cli_login_")
        || name.starts_with("pg_")
}

/// Schemas the platform creates.
pub const PLATFORM_SCHEMAS: &[&str] = &[
    "auth",
    "storage",
    "realtime",
    "extensions",
    "graphql",
    "graphql_public",
    "pgbouncer",
    "supabase_functions",
    "supabase_migrations",
    "vault",
    "pgsodium",
    "pgsodium_masks",
    "net",
    "cron",
    "pgmq",
    "pgtle",
    "_realtime",
    "_analytics",
    "_supavisor",
    "etl",
    "dbdev",
    "repack",
    "topology",
    "tiger",
    "tiger_data",
];

pub fn is_platform_schema(name: &str) -> bool {
    PLATFORM_SCHEMAS.contains(&name)
        || name.starts_with("timescaledb_")
        || name.starts_with("pg_")
        || name == "information_schema"
}

/// Platform schemas whose rows are the user's data and are backed up:
/// the Supabase CLI's list, plus `supabase_migrations` (the project's
/// migration history, which the CLI needs after a restore) and `vault`
/// (secrets only decrypt in the same project, but a same-project restore
/// must not lose them).
pub const DATA_PLATFORM_SCHEMAS: &[&str] =
    &["auth", "storage", "supabase_functions", "cron", "net", "pgmq", "supabase_migrations", "vault"];

/// Tables of the platform's own migrators: their rows describe the
/// platform's schema version in the target, never restore them.
pub const MIGRATOR_TABLES: &[(&str, &str)] =
    &[("auth", "schema_migrations"), ("storage", "migrations"), ("supabase_functions", "migrations")];

/// Whether a table's rows are backed up (before user exclusions).
pub fn table_data_wanted(schema: &str, table: &str) -> bool {
    if MIGRATOR_TABLES.contains(&(schema, table)) {
        return false;
    }
    !is_platform_schema(schema) || DATA_PLATFORM_SCHEMAS.contains(&schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_reserved_role("supabase_storage_admin") && is_reserved_role("anon") && !is_reserved_role("app"));
        assert!(is_platform_schema("auth") && is_platform_schema("pg_toast") && !is_platform_schema("public"));
        assert!(table_data_wanted("auth", "users") && !table_data_wanted("auth", "schema_migrations"));
        assert!(!table_data_wanted("realtime", "subscription") && table_data_wanted("public", "x"));
    }
}
