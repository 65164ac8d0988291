//! How other crates' errors become problems: the database's (timeouts, collisions,
//! outages), the use cases' refusals, and the domain's former-slug limit.

use axum::http::StatusCode;

use super::{ApiError, FieldError};

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        let code = error
            .as_database_error()
            .and_then(|database| database.code())
            .map(|code| code.into_owned());
        match code.as_deref() {
            // Statement timeouts bound searches, exports and verifications.
            Some("57014") => ApiError::query_timeout(),
            // Answered only when every retry collided too (`storage::retry`).
            Some(code) if storage::retry::is_transient_code(code) => {
                tracing::warn!(%error, "transaction collided with concurrent ones");
                Self {
                    transient: true,
                    ..ApiError::busy("the change collided with concurrent changes; retry it", 1)
                }
            }
            _ if storage::is_unavailable(&error) => ApiError::database_unavailable(&error),
            _ => ApiError::internal(format!("database: {error}")),
        }
    }
}

/// The one place a use case's refusal or failure becomes a problem.
impl From<registry::RegistryError> for ApiError {
    fn from(error: registry::RegistryError) -> Self {
        use registry::RegistryError as Refused;
        let fields = |problems: Vec<registry::FieldProblem>| {
            problems
                .into_iter()
                .map(|problem| FieldError {
                    pointer: problem.pointer,
                    detail: problem.detail,
                })
                .collect()
        };
        match error {
            Refused::NotFound(detail) => ApiError::not_found(detail),
            Refused::Conflict {
                field: Some(field), ..
            } => ApiError::conflict_field(&field.pointer, &field.detail),
            Refused::Conflict {
                detail,
                field: None,
            } => ApiError::conflict(detail),
            Refused::Invalid(problems) => ApiError::invalid(fields(problems)),
            Refused::Forbidden { detail, pointers } if pointers.is_empty() => {
                ApiError::forbidden(detail)
            }
            Refused::Forbidden { detail, pointers } => {
                let pointers: Vec<&str> = pointers.iter().map(String::as_str).collect();
                ApiError::forbidden_fields(detail, &pointers)
            }
            Refused::PreconditionFailed(detail) => ApiError::precondition_failed(detail),
            Refused::FormerSlugLimit(refusal) => ApiError::from(refusal),
            Refused::Lifecycle(refusal) => ApiError::lifecycle(refusal),
            Refused::IllegalTransition(error) => ApiError::illegal_transition(
                error.to_string(),
                error.allowed.iter().map(ToString::to_string).collect(),
            ),
            Refused::Unavailable(detail) => ApiError::unavailable(detail),
            Refused::Collided(error) | Refused::Database(error) => ApiError::from(error),
            Refused::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<domain::tenant::TooManyFormerSlugs> for ApiError {
    /// 409 `former-slug-limit` at `/slug`: a rename would leave the tenant holding more
    /// former slugs than it may.
    fn from(refusal: domain::tenant::TooManyFormerSlugs) -> Self {
        Self {
            errors: vec![FieldError {
                pointer: "/slug".to_owned(),
                detail: refusal.to_string(),
            }],
            ..Self::new(
                StatusCode::CONFLICT,
                "former-slug-limit",
                "Too many former slugs",
                refusal.to_string(),
            )
        }
    }
}
