//! What a use case refuses or fails with, in terms any transport maps once (the REST API to
//! problem+json; a gRPC service or a background runner to their own).

use domain::{LifecycleRefusal, TransitionError};

/// One field of a use case's input at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// JSON pointer (RFC 6901) to the field in the input.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FieldProblem {
    /// The problem `detail` with the field at `pointer`.
    pub fn new(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            detail: detail.into(),
        }
    }
}

/// Why a use case did not make its change. Nothing was written: the transaction rolled back.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The thing does not exist, or is not the caller's to see.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state; `field` names the field whose value
    /// another row holds, when one does.
    #[error("{detail}")]
    Conflict {
        /// What conflicts.
        detail: String,
        /// The field at fault, if one is.
        field: Option<FieldProblem>,
    },
    /// Field values break a rule: every problem at once.
    #[error("{} field(s) invalid", .0.len())]
    Invalid(Vec<FieldProblem>),
    /// The caller may not make this change; `pointers` names each field that reaches
    /// further than it may (empty when no field is to blame).
    #[error("{detail}")]
    Forbidden {
        /// Why not.
        detail: String,
        /// The fields at fault.
        pointers: Vec<String>,
    },
    /// The resource is at another version than the one the caller read.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The tenant's lifecycle status does not allow the write (frozen or archived).
    #[error(transparent)]
    Lifecycle(#[from] LifecycleRefusal),
    /// A rename would leave the tenant holding more former slugs than it may.
    #[error(transparent)]
    FormerSlugLimit(#[from] domain::tenant::TooManyFormerSlugs),
    /// The tenant cannot move to the asked status from its current one.
    #[error(transparent)]
    IllegalTransition(#[from] TransitionError),
    /// A service the use case needs (DNS) could not be asked; trying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The transaction collided with concurrent ones (a deadlock or a serialization
    /// failure). [`storage::with_retries`] runs it again; a caller sees this only when
    /// every attempt collided.
    #[error("the change collided with concurrent changes: {0}")]
    Collided(#[source] sqlx::Error),
    /// The database failed otherwise.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Anything else that went wrong; the cause is for the log, not the caller.
    #[error("{0}")]
    Internal(String),
}

impl RegistryError {
    /// Not found, with `detail`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    /// A conflict with the current state that no single field is to blame for.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict {
            detail: detail.into(),
            field: None,
        }
    }

    /// A conflict over the value of the field at `pointer`, which another row holds.
    pub fn conflict_field(pointer: &str, detail: &str) -> Self {
        Self::Conflict {
            detail: format!("{}: {detail}", pointer.trim_start_matches('/')),
            field: Some(FieldProblem::new(pointer, detail)),
        }
    }

    /// One invalid field.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldProblem::new(pointer, detail)])
    }

    /// The caller may not, with no field to blame.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden {
            detail: detail.into(),
            pointers: Vec::new(),
        }
    }

    /// Something that should not happen; `cause` is logged by whoever reports it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(error: sqlx::Error) -> Self {
        if storage::Transient::is_transient(&error) {
            Self::Collided(error)
        } else {
            Self::Database(error)
        }
    }
}

impl storage::Transient for RegistryError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Collided(_))
    }
}
