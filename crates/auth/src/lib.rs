//! Who is calling and what they may do: principals and scopes, API keys (format, argon2id
//! hashing, a verification cache invalidated across replicas by LISTEN/NOTIFY, and their
//! management rules), the rule for what a principal may grant, OIDC bearer tokens, and the
//! brake on uncached key verifications per client address.

mod brake;
pub mod grant;
pub mod invalidations;
pub mod keys;
pub mod oidc;
mod principal;
mod tenant_claims;
mod verifier;
pub mod viewer;

pub use brake::{Clock, VerificationBrake};
pub use invalidations::Invalidations;
pub use oidc::{OidcConfig, OidcVerifier};
pub use principal::{Principal, PrincipalKind};
pub use verifier::ApiKeyVerifier;

/// Why a request could not be authenticated. The wire message is the same for every kind
/// of bad credential, so a caller cannot probe which prefixes exist.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials")]
    Missing,
    /// The header or key is not in a form this service issues.
    #[error("malformed credentials")]
    Malformed,
    /// No such key, or the secret does not match.
    #[error("invalid credentials")]
    Invalid,
    /// The key was revoked.
    #[error("the API key was revoked")]
    Revoked,
    /// The key is past its expiry.
    #[error("the API key has expired")]
    Expired,
    /// The credential's tenant is archived: it can do nothing until a platform principal
    /// restores it.
    #[error("the credential's tenant is archived")]
    TenantArchived,
    /// A bearer token failed validation; the reason goes to the log, not the client.
    #[error("invalid token: {0}")]
    Token(String),
    /// Bearer tokens are not accepted because no issuer is configured.
    #[error("bearer tokens are not accepted: no OIDC issuer is configured")]
    OidcDisabled,
    /// The client's address has started too many uncached key verifications this second.
    #[error("too many key verifications from this address; retry in a moment")]
    Braked,
    /// The database or the identity provider could not be reached.
    #[error("authentication is unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::TenantArchived => "tenant_archived",
            Self::Token(_) => "invalid_token",
            Self::OidcDisabled => "oidc_disabled",
            Self::Braked => "rate_limited",
            Self::Unavailable(_) => "unavailable",
        }
    }
}
