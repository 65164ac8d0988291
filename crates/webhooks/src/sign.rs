//! The `webhook-signature` header of Standard Webhooks, made by the maintained
//! `standardwebhooks` crate: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each
//! secret that signs, separated by spaces.

use crate::secret::{self, SecretError};

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The signing library refused the input.
    #[error("signing failed: {0}")]
    Library(String),
}

/// The signature header of `body` sent as message `message_id` at `timestamp` (Unix
/// seconds), one entry per secret in `secrets` (the current one first).
pub fn signature_header(
    secrets: &[&str],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignError> {
    let mut entries = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let signer = standardwebhooks::Webhook::from_bytes(secret::key_bytes(secret)?)
            .map_err(|error| SignError::Library(error.to_string()))?;
        entries.push(
            signer
                .sign(message_id, timestamp, body)
                .map_err(|error| SignError::Library(error.to_string()))?,
        );
    }
    Ok(entries.join(" "))
}
