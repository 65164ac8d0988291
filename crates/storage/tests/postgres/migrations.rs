//! The embedded migrations against a real PostgreSQL: round trip, idempotence, validation.

use sqlx::PgPool;
use storage::migrations::{self, EntryState, MigrationError};
use testkit::TestDb;

const TABLES: [&str; 6] = [
    "api_keys",
    "audit_log",
    "tenant_idp_config",
    "tenant_products",
    "tenant_projects",
    "tenants",
];

async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name <> $1 ORDER BY 1",
    )
    .bind(migrations::HISTORY_TABLE)
    .fetch_all(pool)
    .await
    .expect("listing tables")
}

async fn enums(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT t.typname::text, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
         FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE t.typnamespace = current_schema()::regnamespace
         GROUP BY t.typname ORDER BY t.typname",
    )
    .fetch_all(pool)
    .await
    .expect("listing enums")
}

#[tokio::test]
async fn migrate_round_trip_up_reset_up() {
    let db = TestDb::empty().await;

    let first = migrations::up(db.url(), Some(1)).await.expect("up to V1");
    assert_eq!(
        first.iter().map(|entry| entry.version).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(tables(db.pool()).await, TABLES, "V1 is the six seed tables");
    let expected_enums = vec![
        ("idp_kind".to_owned(), "oidc,saml".to_owned()),
        ("tenant_kind".to_owned(), "customer,demo".to_owned()),
        (
            "tenant_project_status".to_owned(),
            "active,archived".to_owned(),
        ),
        (
            "tenant_status".to_owned(),
            "demo,trial,active,frozen,archived".to_owned(),
        ),
    ];
    assert_eq!(enums(db.pool()).await, expected_enums);

    let rest = migrations::up(db.url(), None)
        .await
        .expect("up to the latest");
    let mut applied: Vec<i32> = vec![1];
    applied.extend(rest.iter().map(|entry| entry.version));
    assert_eq!(
        applied,
        migrations::versions(),
        "a fresh database gets every migration"
    );

    migrations::reset(db.url()).await.expect("reset");
    assert!(tables(db.pool()).await.is_empty(), "reset leaves no tables");
    assert!(enums(db.pool()).await.is_empty(), "reset leaves no enums");
    let history: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(migrations::HISTORY_TABLE)
        .fetch_one(db.pool())
        .await
        .expect("history lookup");
    assert!(!history, "reset drops the migration history too");

    let again = migrations::up(db.url(), None)
        .await
        .expect("up after reset");
    assert_eq!(
        again.len(),
        migrations::versions().len(),
        "up after reset applies everything again"
    );
    let all_tables = tables(db.pool()).await;
    assert!(
        TABLES
            .iter()
            .all(|table| all_tables.contains(&(*table).to_owned())),
        "{all_tables:?}"
    );

    let second = migrations::up(db.url(), None).await.expect("second up");
    assert!(
        second.is_empty(),
        "a second up is a no-op, applied {second:?}"
    );

    let entries = migrations::validate(db.url())
        .await
        .expect("validate passes");
    assert!(
        entries
            .iter()
            .all(|entry| entry.state == EntryState::Applied)
    );
}

#[tokio::test]
async fn status_lists_pending_then_applied_with_checksums() {
    let db = TestDb::empty().await;
    let before = migrations::status(db.url()).await.expect("status");
    assert_eq!(before.len(), migrations::versions().len());
    assert!(
        before
            .iter()
            .all(|entry| entry.state == EntryState::Pending && entry.applied_on.is_none())
    );

    migrations::up(db.url(), Some(1)).await.expect("up to V1");
    let after = migrations::status(db.url()).await.expect("status");
    assert_eq!(after[0].state, EntryState::Applied);
    assert_eq!(after[0].checksum, before[0].checksum);
    assert!(after[0].applied_on.is_some());
    assert!(
        after[1..]
            .iter()
            .all(|entry| entry.state == EntryState::Pending)
    );
}

#[tokio::test]
async fn validate_fails_on_a_divergent_checksum() {
    let db = TestDb::migrated().await;
    sqlx::query(&format!(
        "UPDATE {} SET checksum = '1' WHERE version = 1",
        migrations::HISTORY_TABLE
    ))
    .execute(db.pool())
    .await
    .expect("tampering with the history");
    match migrations::validate(db.url()).await {
        Err(MigrationError::Invalid(bad)) => {
            assert_eq!(bad.len(), 1);
            assert_eq!(bad[0].version, 1);
            assert_eq!(bad[0].state, EntryState::Divergent);
        }
        other => panic!("expected a divergent migration, got {other:?}"),
    }
    assert!(
        migrations::up(db.url(), None).await.is_err(),
        "up refuses to run over a divergent history"
    );
}

#[tokio::test]
async fn validate_fails_on_an_applied_migration_missing_from_the_build() {
    let db = TestDb::migrated().await;
    sqlx::query(&format!(
        "INSERT INTO {} (version, name, applied_on, checksum)
         VALUES (99, 'from_the_future', '2026-01-01T00:00:00Z', '42')",
        migrations::HISTORY_TABLE
    ))
    .execute(db.pool())
    .await
    .expect("recording a migration this build lacks");
    let error = migrations::validate(db.url()).await.expect_err("invalid");
    assert_eq!(
        error.to_string(),
        "1 migration(s) disagree with this build: V99 from_the_future (missing)"
    );
}

#[tokio::test]
async fn mark_applied_records_without_running_and_refuses_twice() {
    let db = TestDb::empty().await;
    let entry = migrations::mark_applied(db.url(), 1)
        .await
        .expect("mark applied");
    assert_eq!(entry.version, 1);
    assert!(tables(db.pool()).await.is_empty(), "nothing was run");
    assert!(
        migrations::up(db.url(), Some(1))
            .await
            .expect("up")
            .is_empty(),
        "up now sees V1 as applied"
    );
    assert!(matches!(
        migrations::mark_applied(db.url(), 1).await,
        Err(MigrationError::AlreadyApplied(1))
    ));
    assert!(matches!(
        migrations::mark_applied(db.url(), 999).await,
        Err(MigrationError::UnknownVersion(999))
    ));
}

#[tokio::test]
async fn up_with_an_unknown_target_is_refused() {
    let db = TestDb::empty().await;
    assert!(matches!(
        migrations::up(db.url(), Some(999)).await,
        Err(MigrationError::UnknownVersion(999))
    ));
    assert!(tables(db.pool()).await.is_empty());
}

#[tokio::test]
async fn schema_state_compares_the_database_with_the_build() {
    let db = TestDb::empty().await;
    assert_eq!(
        migrations::schema_state(db.pool()).await.expect("state"),
        migrations::SchemaState::Behind {
            applied: None,
            expected: migrations::latest_version()
        }
    );
    migrations::up(db.url(), None).await.expect("up");
    assert_eq!(
        migrations::schema_state(db.pool()).await.expect("state"),
        migrations::SchemaState::Current
    );
}

#[tokio::test]
async fn concurrent_ups_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let (first, second) = tokio::join!(
        migrations::up(db.url(), None),
        migrations::up(db.url(), None)
    );
    let applied = first.expect("first up").len() + second.expect("second up").len();
    assert_eq!(
        applied,
        migrations::versions().len(),
        "each migration is applied by exactly one run"
    );
}

#[tokio::test]
async fn sslmode_require_insists_on_tls_for_migrations_and_the_pool() {
    // The test cluster serves no TLS: `require` must refuse rather than fall back to the clear.
    let db = TestDb::empty().await;
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let required = format!("{}{separator}sslmode=require", db.url());
    let migrate = migrations::status(&required)
        .await
        .expect_err("no TLS on the server");
    assert!(matches!(migrate, MigrationError::Connect(_)), "{migrate}");
    let pool = storage::connect(&required, &storage::PoolConfig::default()).await;
    assert!(pool.is_err(), "the pool refuses a server without TLS too");
    let preferred = format!("{}{separator}sslmode=prefer", db.url());
    assert!(
        migrations::status(&preferred).await.is_ok(),
        "prefer falls back to the clear"
    );
}
