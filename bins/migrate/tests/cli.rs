//! The `tenant-registry-migrate` binary as an init container runs it: exit codes, one-line
//! errors, and its subcommands against a real PostgreSQL.

use std::process::{Command, Output};

use testkit::TestDb;

fn migrate(database_url: Option<&str>, args: &[&str], app_env: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant-registry-migrate"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("APP_ENV");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    if let Some(app_env) = app_env {
        command.env("APP_ENV", app_env);
    }
    command.output().expect("running tenant-registry-migrate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_one_line_error(output: &Output, code: i32, contains: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr: {}",
        stderr(output)
    );
    let stderr = stderr(output);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(
        stderr.contains(contains),
        "{stderr:?} should mention {contains:?}"
    );
}

#[tokio::test]
async fn up_status_validate_and_a_second_up() {
    let db = TestDb::empty().await;
    let url = Some(db.url());

    let up = migrate(url, &["up", "--target", "1"], None);
    assert!(up.status.success(), "{}", stderr(&up));
    assert_eq!(stdout(&up), "applied V1 init\n");

    let rest = migrate(url, &["up"], None);
    assert!(rest.status.success(), "{}", stderr(&rest));
    assert!(
        stdout(&rest).starts_with("applied V2 "),
        "{}",
        stdout(&rest)
    );

    let again = migrate(url, &["up"], None);
    assert!(again.status.success());
    assert_eq!(
        stdout(&again),
        "nothing to apply: the database is up to date\n"
    );

    for status_alias in ["status", "version"] {
        let status = migrate(url, &[status_alias], None);
        assert!(status.status.success());
        let listing = stdout(&status);
        assert!(
            listing
                .lines()
                .nth(1)
                .is_some_and(|row| row.starts_with("V1") && row.contains("applied")),
            "{listing}"
        );
    }

    let validate = migrate(url, &["validate"], None);
    assert!(validate.status.success(), "{}", stderr(&validate));
}

#[tokio::test]
async fn validate_exits_1_on_a_divergent_migration() {
    let db = TestDb::migrated().await;
    sqlx::query("UPDATE refinery_schema_history SET checksum = '7' WHERE version = 1")
        .execute(db.pool())
        .await
        .expect("tampering");
    let output = migrate(Some(db.url()), &["validate"], None);
    assert_one_line_error(&output, 1, "V1 init (divergent)");
}

async fn assert_schema_intact(db: &TestDb) {
    let tenants: bool = sqlx::query_scalar("SELECT to_regclass('tenants') IS NOT NULL")
        .fetch_one(db.pool())
        .await
        .expect("lookup");
    assert!(tenants, "the schema is intact");
}

#[tokio::test]
async fn reset_without_the_flag_is_refused_and_changes_nothing() {
    let db = TestDb::migrated().await;
    let output = migrate(Some(db.url()), &["reset"], Some("dev"));
    assert_one_line_error(&output, 2, "--yes-really");
    assert_schema_intact(&db).await;
}

#[tokio::test]
async fn reset_is_refused_in_prod_even_with_the_flag() {
    let db = TestDb::migrated().await;
    let output = migrate(Some(db.url()), &["reset", "--yes-really"], Some("prod"));
    assert_one_line_error(&output, 2, "APP_ENV=prod");
    assert_schema_intact(&db).await;
}

#[tokio::test]
async fn reset_without_app_env_is_refused_as_prod() {
    let db = TestDb::migrated().await;
    let output = migrate(Some(db.url()), &["reset", "--yes-really"], None);
    assert_one_line_error(&output, 2, "APP_ENV=prod");
    assert_schema_intact(&db).await;
}

#[tokio::test]
async fn reset_with_the_flag_drops_everything_outside_prod() {
    let db = TestDb::migrated().await;
    let output = migrate(Some(db.url()), &["reset", "--yes-really"], Some("dev"));
    assert!(output.status.success(), "{}", stderr(&output));
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = current_schema()::regnamespace",
    )
    .fetch_one(db.pool())
    .await
    .expect("count");
    assert_eq!(left, 0, "no relation is left");
}

#[tokio::test]
async fn mark_applied_and_its_force_alias() {
    let db = TestDb::empty().await;
    let marked = migrate(Some(db.url()), &["force", "1"], None);
    assert!(marked.status.success(), "{}", stderr(&marked));
    assert_eq!(stdout(&marked), "marked V1 init as applied (not run)\n");
    let twice = migrate(Some(db.url()), &["mark-applied", "1"], None);
    assert_one_line_error(&twice, 1, "already recorded");
    let unknown = migrate(Some(db.url()), &["mark-applied", "42"], None);
    assert_one_line_error(&unknown, 1, "no migration V42");
}

#[test]
fn an_unreachable_database_is_a_one_line_error() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let output = migrate(
        Some("postgres://nobody@127.0.0.1:1/nothing"),
        &["status"],
        None,
    );
    assert_one_line_error(&output, 1, "cannot connect to the database");
}

#[test]
fn a_malformed_database_url_is_a_one_line_error() {
    let output = migrate(Some("definitely not a url"), &["up"], None);
    assert_one_line_error(&output, 1, "invalid database URL");
}

#[test]
fn no_database_url_is_refused() {
    let output = migrate(None, &["up"], None);
    assert_one_line_error(&output, 2, "DATABASE_URL");
}

#[test]
fn help_documents_every_subcommand() {
    let output = migrate(None, &["--help"], None);
    assert!(output.status.success());
    let help = stdout(&output);
    for subcommand in ["up", "status", "validate", "mark-applied", "reset"] {
        assert!(
            help.contains(subcommand),
            "--help lacks {subcommand}: {help}"
        );
    }
}
