//! Endpoint signing secrets: `whsec_` and the base64 of 32 random bytes, the form Standard
//! Webhooks libraries read.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// Why a secret could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
    /// A stored secret is not `whsec_<base64>`.
    #[error("a stored webhook secret is malformed")]
    Malformed,
}

/// Where an endpoint's secret is bound when sealed by the key ring, so a sealed secret
/// copied to another endpoint's row does not open.
pub fn context(endpoint: uuid::Uuid) -> String {
    format!("webhook_endpoints.secret:{endpoint}")
}

/// A new secret, as shown once to the endpoint's owner.
pub fn generate() -> Result<String, SecretError> {
    let mut bytes = [0_u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|error| SecretError::Random(error.to_string()))?;
    Ok(format!("{PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key bytes of a secret made by [`generate`].
pub fn key_bytes(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(PREFIX).ok_or(SecretError::Malformed)?;
    STANDARD.decode(encoded).map_err(|_| SecretError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_is_whsec_and_32_random_bytes() {
        let first = generate().expect("random");
        let second = generate().expect("random");
        assert!(first.starts_with("whsec_"));
        assert_eq!(key_bytes(&first).expect("readable").len(), 32);
        assert_ne!(first, second);
    }

    #[test]
    fn a_secret_without_the_prefix_or_base64_is_refused() {
        assert!(key_bytes("c2VjcmV0").is_err());
        assert!(key_bytes("whsec_not base64!").is_err());
    }
}
