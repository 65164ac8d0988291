//! Backups taken before a tenant's schema or database is dropped: `pg_dump` in its custom
//! format (what `pg_restore` reads), written under `BACKUP_DIR`, with its size and SHA-256,
//! and uploaded to a bucket when `BACKUP_URL` names one ([`Bucket`]).
//! The connection is given to `pg_dump` through libpq's environment, never its command
//! line, where other local users could read a password.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use storage::backups::BackupRow;
use tokio::io::AsyncReadExt as _;
use uuid::Uuid;

use crate::StepError;
use crate::bucket::Bucket;

/// Where backups go and how long they are kept.
#[derive(Debug, Clone)]
pub struct BackupStore {
    /// The directory (`BACKUP_DIR`).
    pub dir: PathBuf,
    /// How long a backup is kept (`BACKUP_RETENTION_DAYS`).
    pub retention: TimeDelta,
    /// The `pg_dump` to run (its major version at least the clusters').
    pub pg_dump: PathBuf,
    /// The bucket backups are uploaded to (`BACKUP_URL`); `dir` then only stages each dump
    /// until it is uploaded.
    pub bucket: Option<Bucket>,
}

/// A dump being written: removed if the step ends before it is kept (a failed or abandoned
/// `pg_dump`, a lost lease), so nothing half-written stays behind.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What to back up.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The cluster's URL.
    pub url: &'a str,
    /// `schema` or `database`.
    pub isolation: &'a str,
    /// The schema's or database's name.
    pub name: &'a str,
    /// The tenant.
    pub tenant_id: Uuid,
    /// Its slug, kept with the backup (the tenant may be purged).
    pub tenant_slug: &'a str,
    /// The product.
    pub product_id: &'a str,
}

/// libpq's environment for `url` (and database `database` instead of the URL's).
fn libpq_env(url: &str, database: Option<&str>) -> Result<Vec<(&'static str, String)>, StepError> {
    let parsed = url::Url::parse(url).map_err(|_| {
        StepError::Config("the product's cluster URL is not a PostgreSQL URL".to_owned())
    })?;
    let decode = |text: &str| {
        percent_decode(text)
            .ok_or_else(|| StepError::Config("the cluster URL is not percent-encoded well".into()))
    };
    let mut env = vec![(
        "PGHOST",
        parsed.host_str().unwrap_or("localhost").to_owned(),
    )];
    if let Some(port) = parsed.port() {
        env.push(("PGPORT", port.to_string()));
    }
    if !parsed.username().is_empty() {
        env.push(("PGUSER", decode(parsed.username())?));
    }
    if let Some(password) = parsed.password() {
        env.push(("PGPASSWORD", decode(password)?));
    }
    let named_database = database.is_some();
    let path_database = parsed.path().trim_start_matches('/');
    let database = database.map_or_else(|| decode(path_database), |name| Ok(name.to_owned()))?;
    env.push(("PGDATABASE", database));
    for (key, value) in parsed.query_pairs() {
        // The connection parameters sqlx reads from a URL's query, so pg_dump connects as the
        // provisioner did (the query wins over the URL's own parts, as in sqlx).
        let variable = match key.as_ref() {
            "host" | "hostaddr" => "PGHOST",
            "port" => "PGPORT",
            "user" => "PGUSER",
            "password" => "PGPASSWORD",
            "dbname" if !named_database => "PGDATABASE",
            "sslmode" => "PGSSLMODE",
            "sslrootcert" => "PGSSLROOTCERT",
            "sslcert" => "PGSSLCERT",
            "sslkey" => "PGSSLKEY",
            "options" => "PGOPTIONS",
            _ => continue,
        };
        env.retain(|(name, _)| *name != variable);
        env.push((variable, value.into_owned()));
    }
    Ok(env)
}

fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

async fn digest(path: &Path) -> Result<(i64, String), StepError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|error| StepError::Backup(format!("cannot read the dump back: {error}")))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut size: i64 = 0;
    loop {
        let read = file
            .read(&mut buffer)
            .await
            .map_err(|error| StepError::Backup(format!("cannot read the dump back: {error}")))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size = size.saturating_add(i64::try_from(read).unwrap_or(i64::MAX));
    }
    Ok((size, hex::encode(hasher.finalize())))
}

impl BackupStore {
    /// Dumps `subject` to a new file under the directory; answers its record, to be stored
    /// with the step. A dump that did not finish leaves no file behind.
    pub async fn take(
        &self,
        subject: Subject<'_>,
        now: DateTime<Utc>,
    ) -> Result<BackupRow, StepError> {
        let id = Uuid::new_v4();
        let dir = self
            .dir
            .join(subject.tenant_id.to_string())
            .join(subject.product_id);
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .await
            .map_err(|error| {
                tracing::warn!(dir = %dir.display(), %error, "cannot make the backup directory");
                StepError::Backup("the backup directory cannot be written".to_owned())
            })?;
        let file_name = format!("{}-{id}.dump", now.format("%Y%m%dT%H%M%SZ"));
        let partial = Partial(dir.join(format!("{file_name}.partial")));
        let done = dir.join(&file_name);
        // A dump holds the tenant's data: readable by this user only. pg_dump writes into the
        // file made here, which keeps its mode, rather than one the umask decides.
        private_file(&partial.0).await.map_err(|error| {
            tracing::warn!(file = %partial.0.display(), %error, "cannot make the backup file");
            StepError::Backup("the backup directory cannot be written".to_owned())
        })?;
        let database = (subject.isolation == "database").then_some(subject.name);
        let mut command = tokio::process::Command::new(&self.pg_dump);
        command
            .arg("--format=custom")
            .arg("--no-owner")
            .arg("--no-privileges")
            // A lock held by someone else fails the attempt (retried) instead of hanging it.
            .arg("--lock-wait-timeout=60s")
            .arg(format!("--file={}", partial.0.display()))
            // Only the cluster's own settings: never the server's PGPASSFILE, PGSERVICE, …
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(libpq_env(subject.url, database)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if subject.isolation == "schema" {
            command.arg(format!(
                "--schema={}",
                storage::tenant_schemas::quoted(subject.name)
            ));
        }
        let output = command
            .output()
            .await
            .map_err(|error| StepError::Backup(format!("cannot run pg_dump: {error}")))?;
        if !output.status.success() {
            // pg_dump's words name the host, port and user: for the server's log only.
            let stderr = String::from_utf8_lossy(&output.stderr);
            tracing::warn!(product = subject.product_id, tenant_id = %subject.tenant_id, stderr = %stderr.trim(), "pg_dump failed");
            return Err(StepError::Backup(format!(
                "pg_dump failed (exit status {}); the server's log says why",
                output.status.code().unwrap_or(-1)
            )));
        }
        tokio::fs::rename(&partial.0, &done)
            .await
            .map_err(|error| StepError::Backup(format!("cannot keep the dump: {error}")))?;
        let (size_bytes, sha256) = digest(&done).await?;
        let location = match &self.bucket {
            Some(bucket) => {
                let tenant = subject.tenant_id.to_string();
                let uploaded = bucket
                    .upload(&done, &[&tenant, subject.product_id, &file_name])
                    .await;
                let _ = tokio::fs::remove_file(&done).await;
                uploaded?
            }
            None => std::path::absolute(&done)
                .unwrap_or(done)
                .display()
                .to_string(),
        };
        Ok(BackupRow {
            id,
            tenant_id: subject.tenant_id,
            tenant_slug: subject.tenant_slug.to_owned(),
            product_id: subject.product_id.to_owned(),
            isolation: subject.isolation.to_owned(),
            object_name: subject.name.to_owned(),
            location,
            format: "pg_dump-custom".to_owned(),
            size_bytes,
            sha256,
            created_at: now,
            expires_at: now + self.retention,
            deleted_at: None,
        })
    }

    /// Deletes the file or object of `backup` (already gone counts as deleted).
    pub async fn delete(&self, backup: &BackupRow) -> Result<(), StepError> {
        if let Some(bucket) = self
            .bucket
            .as_ref()
            .filter(|bucket| bucket.holds(&backup.location))
        {
            return bucket.delete(&backup.location).await;
        }
        if backup.location.starts_with("s3://") {
            return Err(StepError::Backup(format!(
                "{} is in a bucket this server is not given (BACKUP_URL)",
                backup.location
            )));
        }
        match tokio::fs::remove_file(&backup.location).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StepError::Backup(format!(
                "cannot delete {}: {error}",
                backup.location
            ))),
        }
    }
}

/// An empty file at `path` that only this user may read or write.
async fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_to_the_environment_decoded() {
        let env = libpq_env(
            "postgres://app%40x:p%2Fss@db.internal:6543/products?sslmode=require",
            None,
        )
        .expect("a URL");
        let get = |key: &str| {
            env.iter()
                .find(|(name, _)| *name == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGUSER"), Some("app@x"));
        assert_eq!(get("PGPASSWORD"), Some("p/ss"));
        assert_eq!(get("PGDATABASE"), Some("products"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
    }

    #[test]
    fn connection_parameters_in_the_query_win_over_the_urls_own_parts() {
        let env = libpq_env(
            "postgres://ignored@h/products?user=dumper&password=p%26w&port=6000&dbname=other&sslcert=/c",
            None,
        )
        .expect("a URL");
        let get = |key: &str| {
            let values: Vec<&str> = env
                .iter()
                .filter(|(name, _)| *name == key)
                .map(|(_, value)| value.as_str())
                .collect();
            values
        };
        assert_eq!(get("PGUSER"), ["dumper"]);
        assert_eq!(get("PGPASSWORD"), ["p&w"]);
        assert_eq!(get("PGPORT"), ["6000"]);
        assert_eq!(get("PGDATABASE"), ["other"]);
        assert_eq!(get("PGSSLCERT"), ["/c"]);
        let own =
            libpq_env("postgres://u@h/products?dbname=other", Some("tenant_ab")).expect("a URL");
        assert!(own.contains(&("PGDATABASE", "tenant_ab".to_owned())));
    }

    #[test]
    fn a_database_per_tenant_is_dumped_from_its_own_database() {
        let env = libpq_env("postgres://u@h/products", Some("tenant_ab")).expect("a URL");
        assert!(env.contains(&("PGDATABASE", "tenant_ab".to_owned())));
    }
}
