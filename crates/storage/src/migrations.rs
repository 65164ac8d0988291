//! The embedded, forward-only migrations (`migrations/V{n}__{name}.sql`) and the operations
//! the migrate binary and the test harness run over them.
//!
//! refinery applies them through its tokio-postgres driver and records each in
//! `refinery_schema_history`; everything else here reads that table directly.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_postgres::{Client, NoTls};

mod embedded {
    refinery::embed_migrations!("../../migrations");
}

/// The table refinery keeps its history in.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// Serialises concurrent `up` runs (several init containers starting at once).
const MIGRATION_LOCK_KEY: i64 = 0x7465_6e61_6e74_5f72;

/// Failures of a migration command; each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database URL could not be parsed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The database did not answer or refused the connection.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// TLS to the database could not be set up.
    #[error("database TLS: {0}")]
    Tls(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// refinery refused or failed to apply a migration.
    #[error("migration failed: {0}")]
    Apply(#[from] refinery::Error),
    /// A version was named that no embedded migration has.
    #[error("no migration V{0} in this build (known: {known})", known = known_versions())]
    UnknownVersion(i32),
    /// `mark-applied` named a version the database already records.
    #[error("migration V{0} is already recorded as applied")]
    AlreadyApplied(i32),
    /// The applied history disagrees with the embedded migrations.
    #[error("{} migration(s) disagree with this build: {}", .0.len(), describe(.0))]
    Invalid(Vec<Entry>),
}

/// Where one migration stands, comparing the database's history with this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Applied, and the checksum matches the embedded file.
    Applied,
    /// Embedded but not yet applied.
    Pending,
    /// Applied, but the embedded file's name or checksum differs from what was applied.
    Divergent,
    /// Applied, but this build has no such migration.
    Missing,
}

impl EntryState {
    /// A short lowercase word for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Pending => "pending",
            Self::Divergent => "divergent",
            Self::Missing => "missing",
        }
    }
}

/// One row of `status`: a migration, known locally, in the database, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The `n` of `V{n}__name.sql`.
    pub version: i32,
    /// The `name` of `V{n}__name.sql`.
    pub name: String,
    /// The checksum of the embedded file, or the recorded one for a missing migration.
    pub checksum: String,
    /// When it was applied (RFC 3339), if it was.
    pub applied_on: Option<String>,
    /// How the database and this build compare.
    pub state: EntryState,
}

fn describe(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|entry| {
            format!(
                "V{} {} ({})",
                entry.version,
                entry.name,
                entry.state.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_versions() -> String {
    local()
        .iter()
        .map(|migration| format!("V{}", migration.version()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn local() -> Vec<refinery::Migration> {
    embedded::migrations::runner().get_migrations().clone()
}

/// Every embedded migration's version, ascending.
pub fn versions() -> Vec<i32> {
    let mut versions: Vec<i32> = local()
        .iter()
        .map(|migration| migration.version())
        .collect();
    versions.sort_unstable();
    versions
}

/// The highest migration version embedded in this build: the schema version it expects.
pub fn latest_version() -> i32 {
    local()
        .iter()
        .map(|migration| migration.version())
        .max()
        .unwrap_or(0)
}

/// A short digest of every embedded migration; it changes whenever any of them does.
pub fn fingerprint() -> String {
    let mut hasher = Sha256::new();
    for migration in local() {
        hasher.update(format!(
            "{}:{}:{};",
            migration.version(),
            migration.name(),
            migration.checksum()
        ));
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Splits the libpq-style TLS parameters tokio-postgres does not read off the URL: the CA
/// file (`sslrootcert`) is returned, and `sslmode=verify-ca|verify-full` becomes `require`
/// (the rustls connector always verifies the server's certificate and name).
fn tls_parameters(database_url: &str) -> Result<(String, Option<String>), MigrationError> {
    let Ok(mut url) = url::Url::parse(database_url) else {
        // Not a URL (a key=value string): tokio-postgres reports what is wrong with it.
        return Ok((database_url.to_owned(), None));
    };
    let mut root_cert = None;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(key, value)| match key.as_ref() {
            "sslrootcert" => {
                root_cert = Some(value.into_owned());
                None
            }
            "sslmode" if value == "verify-ca" || value == "verify-full" => {
                Some(("sslmode".to_owned(), "require".to_owned()))
            }
            _ => Some((key.into_owned(), value.into_owned())),
        })
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Ok((url.into(), root_cert))
}

fn tls_connector(
    root_cert: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, MigrationError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let tls_error = |detail: String| MigrationError::Tls(detail);
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        for certificate in CertificateDer::pem_file_iter(path)
            .map_err(|error| tls_error(format!("sslrootcert {path}: {error}")))?
        {
            let certificate =
                certificate.map_err(|error| tls_error(format!("sslrootcert {path}: {error}")))?;
            roots
                .add(certificate)
                .map_err(|error| tls_error(format!("sslrootcert {path}: {error}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| tls_error(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection closed with an error");
        }
    });
}

/// Connects as the URL says, over TLS unless `sslmode=disable` (with `prefer`, the default,
/// a server without TLS is still reached in the clear, as libpq does).
async fn open(database_url: &str) -> Result<Client, MigrationError> {
    let (url, root_cert) = tls_parameters(database_url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(MigrationError::InvalidUrl)?;
    config
        .connect_timeout(Duration::from_secs(10))
        .application_name("tenant-registry-migrate");
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Disable {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(MigrationError::Connect)?;
        drive(connection);
        Ok(client)
    } else {
        let tls = tls_connector(root_cert.as_deref())?;
        let (client, connection) = config.connect(tls).await.map_err(MigrationError::Connect)?;
        drive(connection);
        Ok(client)
    }
}

/// Applies pending migrations up to `target` (all when `None`); returns those applied.
///
/// Idempotent: a second run applies nothing. Concurrent runs wait for each other.
pub async fn up(database_url: &str, target: Option<i32>) -> Result<Vec<Entry>, MigrationError> {
    if let Some(version) = target {
        require_local(version)?;
    }
    let mut client = open(database_url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let runner = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .set_target(match target {
            Some(version) => refinery::Target::Version(version),
            None => refinery::Target::Latest,
        });
    let outcome = runner.run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    Ok(outcome?
        .applied_migrations()
        .iter()
        .map(|migration| Entry {
            version: migration.version(),
            name: migration.name().to_owned(),
            checksum: migration.checksum().to_string(),
            applied_on: None,
            state: EntryState::Applied,
        })
        .collect())
}

fn require_local(version: i32) -> Result<refinery::Migration, MigrationError> {
    local()
        .into_iter()
        .find(|migration| migration.version() == version)
        .ok_or(MigrationError::UnknownVersion(version))
}

struct Recorded {
    version: i32,
    name: String,
    applied_on: String,
    checksum: String,
}

async fn recorded(client: &Client) -> Result<Vec<Recorded>, MigrationError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT version, name, applied_on, checksum FROM {HISTORY_TABLE} ORDER BY version"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| Recorded {
            version: row.get(0),
            name: row.get(1),
            applied_on: row.get(2),
            checksum: row.get(3),
        })
        .collect())
}

/// Compares the database's history with the embedded migrations, in version order.
pub async fn status(database_url: &str) -> Result<Vec<Entry>, MigrationError> {
    let client = open(database_url).await?;
    let recorded = recorded(&client).await?;
    let local = local();
    let mut entries: Vec<Entry> = local
        .iter()
        .map(|migration| {
            let checksum = migration.checksum().to_string();
            let applied = recorded
                .iter()
                .find(|row| row.version == migration.version());
            let state = match applied {
                None => EntryState::Pending,
                Some(row) if row.checksum == checksum && row.name == migration.name() => {
                    EntryState::Applied
                }
                Some(_) => EntryState::Divergent,
            };
            Entry {
                version: migration.version(),
                name: migration.name().to_owned(),
                checksum,
                applied_on: applied.map(|row| row.applied_on.clone()),
                state,
            }
        })
        .collect();
    entries.extend(
        recorded
            .into_iter()
            .filter(|row| {
                !local
                    .iter()
                    .any(|migration| migration.version() == row.version)
            })
            .map(|row| Entry {
                version: row.version,
                name: row.name,
                checksum: row.checksum,
                applied_on: Some(row.applied_on),
                state: EntryState::Missing,
            }),
    );
    entries.sort_by_key(|entry| entry.version);
    Ok(entries)
}

/// Fails when an applied migration diverges from this build or is missing from it.
pub async fn validate(database_url: &str) -> Result<Vec<Entry>, MigrationError> {
    let entries = status(database_url).await?;
    let bad: Vec<Entry> = entries
        .iter()
        .filter(|entry| matches!(entry.state, EntryState::Divergent | EntryState::Missing))
        .cloned()
        .collect();
    if bad.is_empty() {
        Ok(entries)
    } else {
        Err(MigrationError::Invalid(bad))
    }
}

/// Records migration `version` as applied without running it: a repair for a database that
/// was changed by hand.
pub async fn mark_applied(database_url: &str, version: i32) -> Result<Entry, MigrationError> {
    let migration = require_local(version)?;
    let client = open(database_url).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
                 version INT4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255),
                 checksum VARCHAR(255))"
        ))
        .await?;
    let applied_on = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let checksum = migration.checksum().to_string();
    let inserted = client
        .execute(
            &format!(
                "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING"
            ),
            &[&version, &migration.name(), &applied_on, &checksum],
        )
        .await?;
    if inserted == 0 {
        return Err(MigrationError::AlreadyApplied(version));
    }
    Ok(Entry {
        version,
        name: migration.name().to_owned(),
        checksum,
        applied_on: Some(applied_on),
        state: EntryState::Applied,
    })
}

/// Drops every table, view, sequence, type and function in the current schema, refinery's
/// history included, leaving the schema itself (and its grants) in place.
///
/// For development and tests only; the caller decides whether the environment allows it.
pub async fn reset(database_url: &str) -> Result<(), MigrationError> {
    let client = open(database_url).await?;
    client
        .batch_execute(
            r#"
DO $$
DECLARE
    object record;
BEGIN
    FOR object IN
        SELECT c.relname, c.relkind FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
    LOOP
        EXECUTE format(
            CASE object.relkind
                WHEN 'v' THEN 'DROP VIEW IF EXISTS %I CASCADE'
                WHEN 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS %I CASCADE'
                WHEN 'S' THEN 'DROP SEQUENCE IF EXISTS %I CASCADE'
                WHEN 'f' THEN 'DROP FOREIGN TABLE IF EXISTS %I CASCADE'
                ELSE 'DROP TABLE IF EXISTS %I CASCADE'
            END, object.relname);
    END LOOP;
    FOR object IN
        SELECT t.typname FROM pg_type t
        WHERE t.typnamespace = current_schema()::regnamespace AND t.typtype IN ('e', 'd')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP TYPE IF EXISTS %I CASCADE', object.typname);
    END LOOP;
    FOR object IN
        SELECT p.oid::regprocedure AS signature FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', object.signature);
    END LOOP;
END
$$;
"#,
        )
        .await?;
    Ok(())
}

/// How the database's schema compares with what this build expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// At exactly the expected version.
    Current,
    /// Behind: pending migrations must run before this build can serve.
    Behind {
        /// The highest applied version, if any.
        applied: Option<i32>,
        /// The version this build expects.
        expected: i32,
    },
    /// Ahead: a newer build migrated it. Migrations are additive, so this build may serve.
    Ahead {
        /// The highest applied version.
        applied: i32,
        /// The version this build expects.
        expected: i32,
    },
}

impl std::fmt::Display for SchemaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Current => write!(f, "the database schema is at V{}", latest_version()),
            Self::Behind { applied, expected } => write!(
                f,
                "the database schema is at {}, this build needs V{expected}: run `tenant-registry-migrate up`",
                applied.map_or("no version".to_owned(), |version| format!("V{version}"))
            ),
            Self::Ahead { applied, expected } => write!(
                f,
                "the database schema is at V{applied}, newer than the V{expected} this build expects"
            ),
        }
    }
}

/// Reads the applied schema version through the service's own pool.
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, sqlx::Error> {
    let has_history: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(HISTORY_TABLE)
        .fetch_one(pool)
        .await?;
    let applied: Option<i32> = if has_history {
        sqlx::query_scalar(&format!("SELECT max(version) FROM {HISTORY_TABLE}"))
            .fetch_one(pool)
            .await?
    } else {
        None
    };
    let expected = latest_version();
    Ok(match applied {
        Some(version) if version == expected => SchemaState::Current,
        Some(version) if version > expected => SchemaState::Ahead {
            applied: version,
            expected,
        },
        applied => SchemaState::Behind { applied, expected },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_tls_parameters_are_translated_for_tokio_postgres() {
        let (url, root) = tls_parameters(
            "postgres://u:p@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
        )
        .expect("parses");
        assert_eq!(
            url,
            "postgres://u:p@db.example.com:5432/app?sslmode=require&application_name=x"
        );
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (plain, none) = tls_parameters("postgres://localhost/app").expect("parses");
        assert_eq!((plain.as_str(), none), ("postgres://localhost/app", None));
    }

    #[test]
    fn a_missing_root_certificate_file_is_a_clear_error() {
        let error = tls_connector(Some("/nonexistent/ca.pem"))
            .err()
            .map(|error| error.to_string());
        assert!(error.is_some_and(|message| message.contains("sslrootcert /nonexistent/ca.pem")));
    }
}
