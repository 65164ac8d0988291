//! Backups in an S3-compatible bucket (`BACKUP_URL`): a purge's dump is uploaded (nothing
//! stays in the staging directory), recorded with the object's size and SHA-256, readable by
//! `pg_restore`, and deleted from the bucket when its retention ends.

use domain::provisioning::tenant_object_name;
use serde_json::json;
use testkit::TestDb;
use testkit::s3::S3Server;

use crate::plans::tempdir;
use crate::support::{actor, admin, migrations, product, settle, subscribed_tenant};
use crate::teardown::{archived, hex_sha256};

#[tokio::test]
async fn a_backup_goes_to_the_bucket_and_leaves_it_when_its_retention_ends() {
    let s3 = S3Server::start().await;
    s3.create_bucket("backups").await;
    let settings = s3.settings();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let bucket =
        provisioner::Bucket::open("s3://backups/registry/test", &settings).expect("a bucket");
    let db = TestDb::migrated().await;
    let staging = tempdir();
    product(
        db.pool(),
        "certifai",
        json!({"steps": [
            {"kind": "database", "isolation": "schema"},
            {"kind": "migrations"},
            {"kind": "seed", "statements": ["INSERT INTO documents (title) VALUES ($3)"]}
        ]}),
    )
    .await;
    migrations(
        db.pool(),
        "certifai",
        &[(1, "CREATE TABLE documents (title text NOT NULL)")],
    )
    .await;
    let tenant = subscribed_tenant(db.pool(), "acme", "certifai").await;
    let runner = crate::support::runner_with_store(
        db.pool(),
        provisioner::Clusters::with([(
            domain::provisioning::default_cluster_env("certifai"),
            db.url().to_owned(),
        )]),
        provisioner::BackupStore {
            dir: staging.path().to_path_buf(),
            retention: chrono::TimeDelta::days(90),
            pg_dump: "pg_dump".into(),
            bucket: Some(bucket.clone()),
        },
    );
    settle(&runner).await;
    archived(db.pool(), tenant).await;
    let principal = admin();
    registry::tenants::purge(db.pool(), &actor(&principal), tenant, None)
        .await
        .expect("a purge");
    settle(&runner).await;
    assert!(
        crate::support::tables(db.pool(), &tenant_object_name(tenant))
            .await
            .is_empty(),
        "dropped once the backup was uploaded"
    );

    let kept = registry::provisioning::backups_of(db.pool(), tenant)
        .await
        .expect("backups");
    assert_eq!(kept.len(), 1);
    let backup = &kept[0];
    assert!(
        backup
            .location
            .starts_with(&format!("s3://backups/registry/test/{tenant}/certifai/")),
        "{}",
        backup.location
    );
    let staged: Vec<_> = walk(staging.path());
    assert!(
        staged.is_empty(),
        "left in the staging directory: {staged:?}"
    );
    let bytes = bucket.fetch(&backup.location).await.expect("the object");
    assert_eq!(i64::try_from(bytes.len()).ok(), Some(backup.size_bytes));
    assert_eq!(hex_sha256(&bytes), backup.sha256);
    let dump = staging.path().join("fetched.dump");
    std::fs::write(&dump, &bytes).expect("written");
    let listed = std::process::Command::new("pg_restore")
        .arg("--list")
        .arg(&dump)
        .output()
        .expect("pg_restore runs");
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA"));
    std::fs::remove_file(&dump).expect("removed");

    sqlx::query("UPDATE tenant_backups SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(backup.id)
        .execute(db.pool())
        .await
        .expect("expired");
    assert_eq!(runner.sweep_expired_backups().await, 1);
    assert!(
        bucket.fetch(&backup.location).await.is_err(),
        "deleted from the bucket"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}
