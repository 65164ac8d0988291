//! An S3-compatible bucket for backups (`BACKUP_URL=s3://bucket/prefix`), through the
//! `object_store` crate: the Apache Arrow project's maintained client for S3 and its clones
//! (MinIO, Ceph, R2…), with streaming multipart uploads, retries and the standard `AWS_*`
//! settings (credentials, region, endpoint, web identity in Kubernetes), so no S3 signing is
//! written here.

use std::path::Path as FilePath;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::AsyncReadExt as _;

use crate::StepError;

/// A part of a multipart upload: S3 asks at least 5 MiB of every part but the last.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Where backups are uploaded.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, how locations start.
    root: String,
    /// The key prefix under which backups go (may be empty).
    prefix: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("root", &self.root)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// The bucket of `url` (`s3://bucket[/prefix]`), configured from the `AWS_*` environment
    /// and then `settings` (`("aws_endpoint", …)` and the like: object_store's keys).
    pub fn open(url: &str, settings: &[(&str, &str)]) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|_| format!("{url:?} is not a URL"))?;
        if parsed.scheme() != "s3" || parsed.host_str().is_none_or(str::is_empty) {
            return Err("must be s3://bucket or s3://bucket/prefix".to_owned());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "must not hold credentials: give them as AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or a role"
                    .to_owned(),
            );
        }
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
        for (key, value) in settings {
            let key: AmazonS3ConfigKey = key
                .parse()
                .map_err(|_| format!("{key} is not an S3 setting"))?;
            builder = builder.with_config(key, *value);
        }
        let store = builder
            .build()
            .map_err(|error| format!("the bucket cannot be configured: {error}"))?;
        Ok(Self {
            store: Arc::new(store),
            root: format!("s3://{bucket}"),
            prefix: parsed.path().trim_matches('/').to_owned(),
        })
    }

    /// The location a backup named `key` (under the prefix) has.
    fn location(&self, key: &Path) -> String {
        format!("{}/{key}", self.root)
    }

    fn key(&self, parts: &[&str]) -> Path {
        let mut key = Path::from(self.prefix.as_str());
        for part in parts {
            key = key.child(*part);
        }
        key
    }

    /// The object of `location`, when it is in this bucket.
    fn key_of(&self, location: &str) -> Option<Path> {
        let rest = location.strip_prefix(&self.root)?.strip_prefix('/')?;
        Path::parse(rest).ok()
    }

    /// Whether `location` is in this bucket.
    pub fn holds(&self, location: &str) -> bool {
        self.key_of(location).is_some()
    }

    /// Uploads the file `from` as `parts` (joined under the prefix), streamed in parts;
    /// answers its location. An upload that fails is aborted, leaving no object.
    pub async fn upload(&self, from: &FilePath, parts: &[&str]) -> Result<String, StepError> {
        let key = self.key(parts);
        let upload = self
            .store
            .put_multipart(&key)
            .await
            .map_err(|error| refused("start the upload", &error))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut file = tokio::fs::File::open(from)
            .await
            .map_err(|error| StepError::Backup(format!("cannot read the dump: {error}")))?;
        let mut buffer = vec![0_u8; 1024 * 1024];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(read) => read,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(StepError::Backup(format!("cannot read the dump: {error}")));
                }
            };
            if read == 0 {
                break;
            }
            if let Err(error) = writer.wait_for_capacity(4).await {
                let _ = writer.abort().await;
                return Err(refused("upload a part", &error));
            }
            writer.write(&buffer[..read]);
        }
        writer
            .finish()
            .await
            .map_err(|error| refused("finish the upload", &error))?;
        Ok(self.location(&key))
    }

    /// Deletes the object of `location` (already gone counts as deleted).
    pub async fn delete(&self, location: &str) -> Result<(), StepError> {
        let key = self
            .key_of(location)
            .ok_or_else(|| StepError::Backup(format!("{location} is not in the bucket")))?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(refused("delete a backup", &error)),
        }
    }

    /// The bytes of the object of `location`, for a restore.
    pub async fn fetch(&self, location: &str) -> Result<Vec<u8>, StepError> {
        let key = self
            .key_of(location)
            .ok_or_else(|| StepError::Backup(format!("{location} is not in the bucket")))?;
        let object = self
            .store
            .get(&key)
            .await
            .map_err(|error| refused("read a backup", &error))?;
        object
            .bytes()
            .await
            .map(|bytes| bytes.to_vec())
            .map_err(|error| refused("read a backup", &error))
    }
}

/// A bucket's failure in words for `last_error`; the details (endpoint, request ids) go to
/// the log.
fn refused(doing: &str, error: &object_store::Error) -> StepError {
    tracing::warn!(%error, "backup bucket: cannot {doing}");
    StepError::Backup(format!(
        "the backup bucket refused to {doing}; the server's log says why"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_a_url_that_is_not_an_s3_bucket_or_holds_credentials() {
        for url in [
            "file:///backups",
            "s3://",
            "not a url",
            "s3://key:secret@bucket/x",
        ] {
            assert!(Bucket::open(url, &[]).is_err(), "{url}");
        }
        let unknown = Bucket::open("s3://backups", &[("colour", "red")]);
        assert!(unknown.is_err());
    }

    #[test]
    fn locations_are_under_the_bucket_and_its_prefix() {
        let bucket = Bucket::open(
            "s3://backups/registry/prod/",
            &[("aws_region", "eu-west-1")],
        )
        .expect("a bucket");
        let key = bucket.key(&["tenant", "certifai", "x.dump"]);
        let location = bucket.location(&key);
        assert_eq!(
            location,
            "s3://backups/registry/prod/tenant/certifai/x.dump"
        );
        assert!(bucket.holds(&location));
        assert!(!bucket.holds("s3://other/registry/prod/x.dump"));
        assert!(!bucket.holds("/var/backups/x.dump"));
    }
}
