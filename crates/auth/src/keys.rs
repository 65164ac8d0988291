//! API keys: the `tr_<env>_<prefix>_<secret>` format and argon2id hashing. The management
//! use cases (create, list, get, revoke, rotate) are `registry::api_keys`, each authorized by
//! [`crate::grant`].
//!
//! The prefix (16 hex digits, 64 bits) is stored in clear for lookup; the secret (32 bytes
//! from the OS CSPRNG, 256 bits, as hex) is never stored: only an argon2id hash of the whole
//! key is. A new or rotated key is returned once and cannot be recovered.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

const PREFIX_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// Argon2id with OWASP's minimum recommendation: 19 MiB of memory, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A key as presented by a caller, split into its parts.
#[derive(Debug)]
pub struct PresentedKey<'a> {
    /// The public lookup prefix.
    pub prefix: &'a str,
    /// The whole key, as hashed.
    pub whole: &'a str,
}

impl<'a> PresentedKey<'a> {
    /// Splits `tr_<env>_<prefix>_<secret>`; `None` when the text is not in that form.
    pub fn parse(whole: &'a str) -> Option<Self> {
        let mut parts = whole.splitn(4, '_');
        let (tag, env, prefix, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let is_hex = |text: &str, bytes: usize| {
            text.len() == bytes * 2
                && text
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        let valid = tag == "tr"
            && !env.is_empty()
            && env.bytes().all(|b| b.is_ascii_lowercase())
            && is_hex(prefix, PREFIX_BYTES)
            && is_hex(secret, SECRET_BYTES);
        valid.then_some(Self { prefix, whole })
    }
}

/// A freshly generated key: the prefix to store and the whole key to show once.
pub struct GeneratedKey {
    /// The public lookup prefix.
    pub prefix: String,
    /// The whole key; shown to its owner once, never stored or logged.
    pub key: SecretString,
    /// The argon2id PHC string to store.
    pub hash: String,
}

/// Why a key could not be generated: the OS random source or the hasher failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot generate a key: {0}")]
pub struct GenerateError(String);

fn random_hex(bytes: usize) -> Result<String, GenerateError> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|error| GenerateError(format!("OS random source: {error}")))?;
    Ok(hex::encode(buffer))
}

/// Generates a key for environment `env` (`dev`, `stage`, `prod`) and hashes it.
///
/// Hashing costs tens of milliseconds of CPU: call it off the async runtime.
pub fn generate(env: &str) -> Result<GeneratedKey, GenerateError> {
    let prefix = random_hex(PREFIX_BYTES)?;
    let key = format!("tr_{env}_{prefix}_{}", random_hex(SECRET_BYTES)?);
    let hash = hash(&key)?;
    Ok(GeneratedKey {
        prefix,
        key: SecretString::from(key),
        hash,
    })
}

fn hash(key: &str) -> Result<String, GenerateError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|error| GenerateError(format!("OS random source: {error}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|error| GenerateError(error.to_string()))?;
    hasher()
        .hash_password(key.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| GenerateError(format!("hashing: {error}")))
}

/// The hash of a random key that is thrown away, for equalising verification time.
pub(crate) fn decoy_hash() -> Result<String, GenerateError> {
    hash(&random_hex(SECRET_BYTES)?)
}

/// Whether `key` matches the PHC string `hash` (in constant time for the comparison).
///
/// Costs as much as hashing: call it off the async runtime.
pub fn verify(hash: &str, key: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| hasher().verify_password(key.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

/// The actor id the bootstrap command is audited under: a kind of its own, which no API
/// key (`api_key:…`) or OIDC user (`oidc:…`) can take.
pub fn bootstrap_actor_id(name: &str) -> String {
    format!("bootstrap:{}", name.trim())
}

/// The whole key as text, for the one response that shows it.
pub fn reveal(key: &SecretString) -> &str {
    key.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_has_the_documented_format_and_verifies() {
        let generated = generate("dev").expect("generate");
        let key = reveal(&generated.key);
        let parsed = PresentedKey::parse(key).expect("our own format parses");
        assert_eq!(parsed.prefix, generated.prefix);
        assert!(key.starts_with(&format!("tr_dev_{}_", generated.prefix)));
        assert_eq!(key.len(), "tr_dev_".len() + 16 + 1 + 64);
        assert!(
            generated
                .hash
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
        assert!(verify(&generated.hash, key));
        assert!(
            !generated.hash.contains(key),
            "the hash does not contain the key"
        );
    }

    #[test]
    fn a_wrong_secret_does_not_verify() {
        let generated = generate("dev").expect("generate");
        let key = reveal(&generated.key);
        let mut tampered = key[..key.len() - 1].to_owned();
        tampered.push(if key.ends_with('0') { '1' } else { '0' });
        assert!(!verify(&generated.hash, &tampered));
        assert!(!verify("not a phc string", key));
    }

    #[test]
    fn two_keys_never_share_prefix_or_secret() {
        let first = generate("dev").expect("generate");
        let second = generate("dev").expect("generate");
        assert_ne!(first.prefix, second.prefix);
        assert_ne!(reveal(&first.key), reveal(&second.key));
    }

    #[test]
    fn malformed_keys_are_rejected_by_the_parser() {
        let good = format!("tr_prod_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(PresentedKey::parse(&good).is_some());
        for bad in [
            "",
            "tr_prod",
            &format!("xx_prod_{}_{}", "a".repeat(16), "b".repeat(64)),
            &format!("tr__{}_{}", "a".repeat(16), "b".repeat(64)),
            &format!("tr_prod_{}_{}", "a".repeat(15), "b".repeat(64)),
            &format!("tr_prod_{}_{}", "A".repeat(16), "b".repeat(64)),
            &format!("tr_prod_{}_{}", "a".repeat(16), "b".repeat(63)),
            &format!("tr_prod_{}_{}_x", "a".repeat(16), "b".repeat(64)),
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad:?}");
        }
    }
}
