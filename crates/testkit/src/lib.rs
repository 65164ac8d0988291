//! Test support: every integration test gets its own PostgreSQL database, so tests run in
//! parallel without seeing each other, and the database is dropped when the test ends.
//!
//! Migrated databases are copied from a template database that is migrated once per set of
//! migrations (its name carries their fingerprint), which is much faster than migrating each.
//!
//! The server comes from `TEST_DATABASE_URL` (set by `cargo xtask test`, which may have
//! started a container for it) or, when that is unset, from the project's local dev cluster,
//! started on demand.

use std::path::Path;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, PgPool};
use url::Url;

/// Serialises template creation across the test processes that run at once.
const TEMPLATE_LOCK_KEY: i64 = 0x7465_6d70_6c61_7465;
pub mod app;
pub mod dns;
pub mod oidc;
pub mod otlp;
pub mod outage;
pub mod receiver;
pub mod s3;
pub mod serving;
pub mod tls;

pub use app::{TestApp, TestResponse, settings};
pub use serving::{Running, await_serving};

/// How long a change made on one replica may take to reach every other replica's caches.
pub const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

/// Polls `check` until it holds; panics naming `what` when it still does not after
/// [`PROPAGATION_BOUND`].
pub async fn within_a_second(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PROPAGATION_BOUND;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within {PROPAGATION_BOUND:?}");
}

/// Prefix of every database a test creates, so strays are easy to find.
pub const TEST_DATABASE_PREFIX: &str = "tr_test_";
const TEMPLATE_PREFIX: &str = "tr_template_";

/// The URL of the PostgreSQL server the tests use (any database on it).
///
/// # Panics
/// When no server can be had: a test without its database cannot say anything useful.
pub fn server_url() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        return url;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cluster = devcluster::Cluster::for_project(&root)
        .and_then(|cluster| cluster.ensure_running().map(|_| cluster))
        .unwrap_or_else(|error| {
            panic!("no TEST_DATABASE_URL and the local dev cluster cannot start: {error}")
        });
    cluster.url()
}

/// A database of its own for one test; dropped (with its connections) when this is dropped.
pub struct TestDb {
    pool: PgPool,
    url: String,
    name: String,
    server_url: String,
}

impl TestDb {
    /// A fresh database at the latest schema version.
    pub async fn migrated() -> Self {
        Self::migrated_on(&server_url()).await
    }

    /// A fresh database at the latest schema version on the server of `server_url` (one
    /// the test runs itself, say).
    pub async fn migrated_on(server_url: &str) -> Self {
        let template = ensure_template(server_url).await;
        Self::create(server_url.to_owned(), &format!("TEMPLATE \"{template}\"")).await
    }

    /// A fresh database with no schema at all, for exercising the migrations themselves.
    pub async fn empty() -> Self {
        Self::create(server_url(), "TEMPLATE template0").await
    }

    async fn create(server_url: String, clause: &str) -> Self {
        let name = format!("{TEST_DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&server_url).await;
        admin
            .execute(format!("CREATE DATABASE \"{name}\" {clause}").as_str())
            .await
            .unwrap_or_else(|error| panic!("creating test database {name}: {error}"));
        let url = database_url(&server_url, &name);
        let pool = storage::connect(&url, &storage::PoolConfig::default())
            .await
            .unwrap_or_else(|error| panic!("connecting to test database {name}: {error}"));
        Self {
            pool,
            url,
            name,
            server_url,
        }
    }

    /// A pool connected to this test's database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The URL of this test's database, for code that opens its own connections.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // runtime on its own thread does the async clean-up and is waited for.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            runtime.block_on(async move {
                let mut admin = admin_connection(&server_url).await;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await
                    .map(drop)
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("warning: test database {} not dropped: {error}", self.name)
            }
            Err(_) => eprintln!(
                "warning: test database {} not dropped (clean-up panicked)",
                self.name
            ),
        }
    }
}

/// Replaces the database name in `server_url` with `database`.
pub fn database_url(server_url: &str, database: &str) -> String {
    let mut url = Url::parse(server_url)
        .unwrap_or_else(|error| panic!("TEST_DATABASE_URL is not a URL ({error}): {server_url}"));
    url.set_path(&format!("/{database}"));
    url.into()
}

async fn admin_connection(server_url: &str) -> PgConnection {
    PgConnection::connect(server_url)
        .await
        .unwrap_or_else(|error| panic!("connecting to the test server {server_url}: {error}"))
}

/// Creates, once per set of migrations, a migrated template database; returns its name.
async fn ensure_template(server_url: &str) -> String {
    let template = format!("{TEMPLATE_PREFIX}{}", storage::migrations::fingerprint());
    let mut admin = admin_connection(server_url).await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("taking the template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .expect("looking for the template database");
    if !exists {
        build_template(&mut admin, server_url, &template).await;
    }
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("releasing the template lock");
    template
}

async fn build_template(admin: &mut PgConnection, server_url: &str, template: &str) {
    // Built under a temporary name and renamed when complete, so a template that exists is
    // always a finished one, even after a run was killed half-way.
    let building = format!("{template}_building");
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{building}\""),
    ] {
        admin
            .execute(statement.as_str())
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    storage::migrations::up(&database_url(server_url, &building), None)
        .await
        .unwrap_or_else(|error| panic!("migrating the template database: {error}"));
    let rename = format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\"");
    // The migration connection's backend may still be exiting; renaming waits for it.
    let mut attempts = 0;
    while let Err(error) = admin.execute(rename.as_str()).await {
        attempts += 1;
        assert!(attempts < 100, "{rename}: {error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE $1 AND datname <> $2",
    )
    .bind(format!("{TEMPLATE_PREFIX}%"))
    .bind(template)
    .fetch_all(&mut *admin)
    .await
    .expect("listing stale templates");
    for name in stale {
        // Best effort: another checkout may still be copying from an older template.
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS \"{name}\"").as_str())
            .await;
    }
}
