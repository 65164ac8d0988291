//! The provisioning runner's settings: where backups go and how long they stay, how many
//! runs go at once, how failures back off.

use std::path::PathBuf;

/// `BACKUP_*` and `PROVISIONING_*`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisioningArgs {
    /// Where the `pg_dump` backups taken before a tenant's product data is dropped are
    /// written (a persistent volume in production).
    #[arg(
        long,
        env = "BACKUP_DIR",
        default_value = "target/backups",
        global = true
    )]
    pub backup_dir: PathBuf,

    /// An S3-compatible bucket the backups are uploaded to (`s3://bucket[/prefix]`), with the
    /// standard `AWS_*` settings (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT` for S3 clones, `AWS_ALLOW_HTTP`); `BACKUP_DIR` then only stages each
    /// dump until it is uploaded. Empty keeps them in `BACKUP_DIR`.
    #[arg(long, env = "BACKUP_URL", default_value = "", global = true)]
    pub backup_url: String,

    /// Days a backup is kept, then deleted.
    #[arg(long, env = "BACKUP_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650), global = true)]
    pub backup_retention_days: u32,

    /// The `pg_dump` to run: its major version must be at least the products' clusters'.
    #[arg(long, env = "PG_DUMP", default_value = "pg_dump", global = true)]
    pub pg_dump: PathBuf,

    /// Provisioning runs this replica's runner drives at once (different tenants; one
    /// tenant's runs take turns across every replica).
    #[arg(long, env = "PROVISIONING_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub concurrency: u32,

    /// Seconds before a failed step is tried again; doubled at each failure, at most an
    /// hour.
    #[arg(long, env = "PROVISIONING_RETRY_SECS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600), global = true)]
    pub retry_secs: u32,

    /// Seconds a replica holds a provisioning run it drives, renewed at a third of it while
    /// a step runs: a run whose replica died is taken up by another once this runs out.
    #[arg(long, env = "PROVISIONING_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u32).range(5..=3600), global = true)]
    pub lease_secs: u32,

    /// Hours a product has to report back after answering its hook with 202.
    #[arg(long, env = "PROVISIONING_REPORT_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720), global = true)]
    pub report_hours: u32,
}

impl ProvisioningArgs {
    /// The runner's configuration.
    pub fn runner(&self) -> provisioner::ProvisionerConfig {
        provisioner::ProvisionerConfig {
            concurrency: usize::try_from(self.concurrency).unwrap_or(8),
            retry_base: self.retry_base(),
            report_within: chrono::TimeDelta::hours(i64::from(self.report_hours)),
            lease: chrono::TimeDelta::seconds(i64::from(self.lease_secs)),
            ..provisioner::ProvisionerConfig::default()
        }
    }

    /// The first retry's delay.
    pub fn retry_base(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(i64::from(self.retry_secs))
    }

    /// Where backups go; an error names what is wrong with `BACKUP_URL`.
    pub fn backups(&self) -> Result<provisioner::BackupStore, String> {
        let bucket = match self.backup_url.trim() {
            "" => None,
            url => Some(
                provisioner::Bucket::open(url, &[])
                    .map_err(|error| format!("BACKUP_URL {error}"))?,
            ),
        };
        Ok(provisioner::BackupStore {
            dir: self.backup_dir.clone(),
            retention: chrono::TimeDelta::days(i64::from(self.backup_retention_days)),
            pg_dump: self.pg_dump.clone(),
            bucket,
        })
    }
}
