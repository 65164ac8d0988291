//! Deprovisioning: the product is told, a backup is taken that `pg_restore` loads with the
//! same rows, and only then is the schema dropped; a purge does this for each product, then
//! deletes the tenant.

use domain::TenantStatus;
use domain::provisioning::tenant_object_name;
use serde_json::json;
use storage::tenant_schemas;
use testkit::TestDb;

use crate::plans::tempdir;
use crate::support::{
    actor, admin, events, migrations, product, runner, settle, state, subscribed_tenant,
};

pub async fn archived(pool: &storage::PgPool, tenant: uuid::Uuid) {
    let principal = admin();
    let request = registry::tenants::Transition {
        to: TenantStatus::Archived,
        reason: "leaving".to_owned(),
    };
    registry::tenants::transition(pool, &actor(&principal), tenant, request)
        .await
        .expect("archived");
}

#[tokio::test]
async fn a_purge_backs_up_then_drops_and_the_backup_restores_with_the_same_rows() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
            {"kind": "database", "isolation": "schema"},
            {"kind": "migrations"},
            {"kind": "seed", "statements": [
                "INSERT INTO documents (title) SELECT 'page ' || n FROM generate_series(1, 25) AS n"
            ]}
        ]}),
    )
    .await;
    migrations(db.pool(), "certifai", &[(1, "CREATE TABLE documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL)")]).await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let runner = runner(db.pool(), "certifai", db.url(), backups.path());
    settle(&runner).await;
    let schema = tenant_object_name(tenant);
    let mut conn = db.pool().acquire().await.expect("a connection");
    let before = tenant_schemas::row_counts(&mut conn, &schema)
        .await
        .expect("counts");
    drop(conn);

    archived(db.pool(), tenant).await;
    let principal = admin();
    let operation = registry::tenants::purge(db.pool(), &actor(&principal), tenant, None)
        .await
        .expect("a purge");
    assert_eq!((operation.state.as_str(), operation.total), ("running", 1));
    assert!(
        storage::tenants::get(db.pool(), tenant)
            .await
            .expect("read")
            .is_some(),
        "not yet"
    );
    let pass = settle(&runner).await;
    let kinds: Vec<&str> = pass.steps.iter().map(|step| step.step).collect();
    assert_eq!(kinds, ["backup", "drop"]);

    let done = registry::provisioning::operation(db.pool(), operation.id)
        .await
        .expect("read")
        .expect("the operation");
    assert_eq!(done.state, "succeeded");
    assert!(
        storage::tenants::get(db.pool(), tenant)
            .await
            .expect("read")
            .is_none(),
        "purged"
    );
    assert!(
        crate::support::tables(db.pool(), &schema).await.is_empty(),
        "dropped"
    );
    assert_eq!(events(db.pool(), "tenant.purged", tenant).await.len(), 1);

    let kept = registry::provisioning::backups_of(db.pool(), tenant)
        .await
        .expect("backups");
    assert_eq!(kept.len(), 1);
    let backup = &kept[0];
    let bytes = std::fs::read(&backup.location).expect("the dump file");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&backup.location)
            .expect("the dump file")
            .permissions(),
    );
    assert_eq!(
        mode & 0o777,
        0o600,
        "a dump is readable by the server's user only"
    );
    assert_eq!(i64::try_from(bytes.len()).ok(), Some(backup.size_bytes));
    assert_eq!(hex_sha256(&bytes), backup.sha256);
    assert!(backup.expires_at > backup.created_at + chrono::TimeDelta::days(89));

    let restored = fresh_database(db.pool()).await;
    let status = std::process::Command::new("pg_restore")
        .arg(format!("--dbname={}", restored.url))
        .arg("--no-owner")
        .arg(&backup.location)
        .status()
        .expect("pg_restore runs");
    assert!(status.success());
    let mut conn = sqlx::Connection::connect(&restored.url)
        .await
        .expect("the restored database");
    let after = tenant_schemas::row_counts(&mut conn, &schema)
        .await
        .expect("counts");
    drop(conn);
    assert_eq!(after, before);
    assert!(before.contains(&("documents".to_owned(), 25)));
    restored.drop_from(db.pool()).await;
}

#[tokio::test]
async fn unsubscribing_tears_the_product_down_and_no_backup_means_no_drop() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "roles", "roles": [{"name": "member", "permissions": []}]}
    ], "max_attempts": 1}),
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let good = runner(db.pool(), "certifai", db.url(), backups.path());
    settle(&good).await;
    crate::support::unsubscribe(db.pool(), tenant, "certifai").await;
    let principal = admin();
    assert_eq!(
        state(db.pool(), tenant, "certifai").await.state,
        "deprovisioning"
    );

    let no_dump = provisioner::Provisioner::new(
        db.pool().clone(),
        std::sync::Arc::new(provisioner::Clusters::with([(
            domain::provisioning::default_cluster_env("certifai"),
            db.url().to_owned(),
        )])),
        egress::Egress::new(egress::Policy::DEVELOPMENT).expect("a client"),
        provisioner::BackupStore {
            dir: backups.path().to_path_buf(),
            retention: chrono::TimeDelta::days(90),
            pg_dump: "/nonexistent/pg_dump".into(),
            bucket: None,
        },
        provisioner::ProvisionerConfig::default(),
    );
    settle(&no_dump).await;
    let failed = state(db.pool(), tenant, "certifai").await;
    assert_eq!(failed.state, "failed");
    assert!(failed.last_error.unwrap_or_default().contains("pg_dump"));
    let schema_kept: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(tenant_object_name(tenant))
            .fetch_one(db.pool())
            .await
            .expect("read");
    assert!(schema_kept, "no backup, no drop");

    registry::provisioning::retry(
        db.pool(),
        &actor(&principal),
        tenant,
        domain::TenantWrite::Administer,
    )
    .await
    .expect("retried");
    settle(&good).await;
    let done = state(db.pool(), tenant, "certifai").await;
    assert_eq!(done.state, "deprovisioned");
    assert!(done.backup_id.is_some());
    assert!(
        registry::provisioning::roles_of(db.pool(), tenant, None, 10)
            .await
            .expect("roles")
            .is_empty()
    );
    assert_eq!(
        events(db.pool(), "tenant.deprovisioned", tenant)
            .await
            .len(),
        1
    );
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

struct Restored {
    name: String,
    url: String,
}

impl Restored {
    async fn drop_from(self, pool: &storage::PgPool) {
        sqlx::raw_sql(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(pool)
            .await
            .expect("the restored database is dropped");
    }
}

/// A new empty database on the test's server.
async fn fresh_database(pool: &storage::PgPool) -> Restored {
    let name = format!("restored_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(pool)
        .await
        .expect("a database");
    let mut url = url::Url::parse(&testkit::server_url()).expect("the server URL");
    url.set_path(&name);
    Restored {
        name,
        url: url.to_string(),
    }
}

#[tokio::test]
async fn a_database_per_tenant_is_made_migrated_backed_up_and_dropped() {
    let db = TestDb::migrated().await;
    let backups = tempdir();
    product(
        db.pool(),
        "ledger",
        json!({"steps": [
            {"kind": "database", "isolation": "database"},
            {"kind": "migrations"}
        ]}),
    )
    .await;
    migrations(
        db.pool(),
        "ledger",
        &[(1, "CREATE TABLE entries (amount numeric NOT NULL)")],
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "ledger").await;
    let runner = runner(db.pool(), "ledger", db.url(), backups.path());
    settle(&runner).await;
    let run = state(db.pool(), tenant, "ledger").await;
    assert_eq!(
        (run.state.as_str(), run.isolation.as_deref()),
        ("ready", Some("database"))
    );
    let name = tenant_object_name(tenant);
    let mut url = url::Url::parse(db.url()).expect("the test URL");
    url.set_path(&name);
    let mut own: sqlx::PgConnection = sqlx::Connection::connect(url.as_str())
        .await
        .expect("the tenant's own database");
    let counts = tenant_schemas::row_counts(&mut own, "public")
        .await
        .expect("counts");
    assert!(counts.contains(&("entries".to_owned(), 0)), "{counts:?}");
    drop(own);

    crate::support::unsubscribe(db.pool(), tenant, "ledger").await;
    settle(&runner).await;
    let done = state(db.pool(), tenant, "ledger").await;
    assert_eq!(done.state, "deprovisioned");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(db.pool())
            .await
            .expect("read");
    assert!(!exists, "the tenant's database is dropped");
    let kept = registry::provisioning::backups_of(db.pool(), tenant)
        .await
        .expect("backups");
    assert_eq!((kept.len(), kept[0].isolation.as_str()), (1, "database"));
}
