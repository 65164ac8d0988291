//! Field encryption at rest: AES-256-GCM with a ring of named keys.
//!
//! `ENCRYPTION_KEYS` is `kid:base64key,kid:base64key,…` (32-byte keys). The first key
//! encrypts; every key decrypts, so keys rotate by putting a new one first and keeping the
//! old ones until the data is re-encrypted. Each value is bound to where it is stored (the
//! associated data names the table, column and row), so a ciphertext copied to another row
//! does not decrypt.
//!
//! Envelope: `0x01 | kid length (1 byte) | kid | 12-byte random nonce | ciphertext+tag`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const ENVELOPE_VERSION: u8 = 1;
const KEY_LEN: usize = 32;

/// Why a key ring could not be built or a value not sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// `ENCRYPTION_KEYS` is malformed; the message says which entry and why.
    #[error("ENCRYPTION_KEYS: {0}")]
    Config(String),
    /// The ciphertext names a key the ring does not hold.
    #[error("the value was encrypted with key {0:?}, which is not in ENCRYPTION_KEYS")]
    UnknownKey(String),
    /// The ciphertext is damaged, or was moved from another row.
    #[error("the value cannot be decrypted (damaged, or not stored where it was encrypted)")]
    Corrupt,
    /// The OS random source failed.
    #[error("the OS random source failed")]
    Random,
}

struct NamedKey {
    kid: String,
    key: LessSafeKey,
}

/// The keys; the first encrypts, all decrypt.
pub struct Keyring {
    keys: Vec<NamedKey>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|key| key.kid.as_str()).collect();
        f.debug_struct("Keyring")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses `kid:base64key,…`.
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        // A malformed entry is named by its position, never by its text: the text may be
        // key material (a key pasted without its id, or id and key swapped).
        for (position, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
        {
            let number = position + 1;
            let (kid, encoded) = entry.split_once(':').ok_or_else(|| {
                KeyringError::Config(format!("entry {number} is not kid:base64key"))
            })?;
            if kid.is_empty()
                || kid.len() > 64
                || !kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(KeyringError::Config(format!(
                    "entry {number}: the key id before ':' must be 1 to 64 letters, digits, dashes or underscores"
                )));
            }
            if keys.iter().any(|named: &NamedKey| named.kid == kid) {
                return Err(KeyringError::Config(format!(
                    "entry {number}: its key id appears twice"
                )));
            }
            let bytes = STANDARD.decode(encoded).map_err(|_| {
                KeyringError::Config(format!("entry {number}: the key is not base64"))
            })?;
            if bytes.len() != KEY_LEN {
                return Err(KeyringError::Config(format!(
                    "entry {number}: the key is {} bytes; AES-256 needs {KEY_LEN}",
                    bytes.len()
                )));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| {
                KeyringError::Config(format!(
                    "entry {number}: the key is not a valid AES-256 key"
                ))
            })?;
            keys.push(NamedKey {
                kid: kid.to_owned(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Config("no keys given".to_owned()));
        }
        Ok(Self {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// A new key ring spec with one random key named `kid`, for development.
    pub fn generate_spec(kid: &str) -> Result<String, KeyringError> {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyringError::Random)?;
        Ok(format!("{kid}:{}", STANDARD.encode(key)))
    }

    /// The id of the key that encrypts.
    pub fn current_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. `tenants.contact_email:<id>`).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let current = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| KeyringError::Random)?;
        let mut data = plaintext.to_vec();
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| KeyringError::Corrupt)?;
        let kid = current.kid.as_bytes();
        let mut envelope = Vec::with_capacity(2 + kid.len() + NONCE_LEN + data.len());
        envelope.push(ENVELOPE_VERSION);
        envelope.push(u8::try_from(kid.len()).map_err(|_| KeyringError::Corrupt)?);
        envelope.extend_from_slice(kid);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&data);
        Ok(envelope)
    }

    /// Decrypts an envelope made by [`Keyring::seal`] with the same `context`.
    pub fn open(&self, context: &str, envelope: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let (&version, rest) = envelope.split_first().ok_or(KeyringError::Corrupt)?;
        if version != ENVELOPE_VERSION {
            return Err(KeyringError::Corrupt);
        }
        let (&kid_len, rest) = rest.split_first().ok_or(KeyringError::Corrupt)?;
        let kid_len = usize::from(kid_len);
        if rest.len() < kid_len + NONCE_LEN {
            return Err(KeyringError::Corrupt);
        }
        let (kid, rest) = rest.split_at(kid_len);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let kid = std::str::from_utf8(kid).map_err(|_| KeyringError::Corrupt)?;
        let named = self
            .keys
            .iter()
            .find(|named| named.kid == kid)
            .ok_or_else(|| KeyringError::UnknownKey(kid.to_owned()))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyringError::Corrupt)?;
        let mut data = sealed.to_vec();
        let plaintext = named
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| KeyringError::Corrupt)?;
        Ok(plaintext.to_vec())
    }

    /// [`Keyring::seal`] for text.
    pub fn seal_str(&self, context: &str, plaintext: &str) -> Result<Vec<u8>, KeyringError> {
        self.seal(context, plaintext.as_bytes())
    }

    /// [`Keyring::open`] for text.
    pub fn open_str(&self, context: &str, envelope: &[u8]) -> Result<String, KeyringError> {
        String::from_utf8(self.open(context, envelope)?).map_err(|_| KeyringError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec_kids: &[&str]) -> (Keyring, Vec<String>) {
        let specs: Vec<String> = spec_kids
            .iter()
            .map(|kid| Keyring::generate_spec(kid).expect("spec"))
            .collect();
        (Keyring::parse(&specs.join(",")).expect("ring"), specs)
    }

    #[test]
    fn a_value_round_trips_and_the_ciphertext_hides_it() {
        let (keys, _) = ring(&["k1"]);
        let sealed = keys
            .seal_str("tenants.contact_email:1", "alice@acme.com")
            .expect("seal");
        assert!(!sealed.windows(5).any(|window| window == b"alice"));
        assert_eq!(
            keys.open_str("tenants.contact_email:1", &sealed)
                .expect("open"),
            "alice@acme.com"
        );
        let again = keys
            .seal_str("tenants.contact_email:1", "alice@acme.com")
            .expect("seal");
        assert_ne!(sealed, again, "a fresh nonce every time");
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let (keys, _) = ring(&["k1"]);
        let sealed = keys
            .seal_str("tenants.contact_email:1", "alice@acme.com")
            .expect("seal");
        assert_eq!(
            keys.open("tenants.contact_email:2", &sealed),
            Err(KeyringError::Corrupt)
        );
    }

    #[test]
    fn old_keys_still_decrypt_after_rotation() {
        let (old, specs) = ring(&["old"]);
        let sealed = old.seal_str("c", "secret").expect("seal");
        let new_spec = Keyring::generate_spec("new").expect("spec");
        let rotated = Keyring::parse(&format!("{new_spec},{}", specs[0])).expect("ring");
        assert_eq!(rotated.current_kid(), "new");
        assert_eq!(rotated.open_str("c", &sealed).expect("open"), "secret");
        let without_old = Keyring::parse(&new_spec).expect("ring");
        assert_eq!(
            without_old.open("c", &sealed),
            Err(KeyringError::UnknownKey("old".to_owned()))
        );
    }

    #[test]
    fn tampering_is_detected() {
        let (keys, _) = ring(&["k1"]);
        let mut sealed = keys.seal_str("c", "secret").expect("seal");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(keys.open("c", &sealed), Err(KeyringError::Corrupt));
        assert_eq!(keys.open("c", &[]), Err(KeyringError::Corrupt));
    }

    #[test]
    fn malformed_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("", "no keys"),
            ("nokid", "kid:base64key"),
            ("k1:!!!", "not base64"),
            ("k1:AAAA", "AES-256 needs 32"),
            ("bad kid:AAAA", "letters, digits"),
        ] {
            let error = Keyring::parse(spec).expect_err(spec);
            assert!(error.to_string().contains(says), "{spec}: {error}");
        }
        let one = Keyring::generate_spec("k").expect("spec");
        let error = Keyring::parse(&format!("{one},{one}")).expect_err("twice");
        assert!(error.to_string().contains("twice"));
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_never_by_its_text() {
        let key = "c2VjcmV0LWtleS1tYXRlcmlhbC0wMTIzNDU2Nzg5YWI=";
        let unpadded = key.trim_end_matches('=');
        for spec in [
            key.to_owned(),
            format!("{key}:k1"),
            format!("{unpadded}:prod"),
            format!("{},{key}", Keyring::generate_spec("k").expect("spec")),
        ] {
            let error = Keyring::parse(&spec).expect_err("malformed").to_string();
            assert!(error.contains(": entry "), "{error}");
            assert!(!error.contains(&key[..4]), "key material echoed: {error}");
        }
    }
}
