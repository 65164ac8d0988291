//! Product config schemas (JSON Schema draft 2020-12): compiled and checked on the blocking
//! pool, never on the runtime's workers.

use serde_json::Value;

use crate::blocking::{self, Overrun};
use crate::problem::{ApiError, FieldError};

/// What a config schema says of an instance.
pub(crate) enum SchemaVerdict {
    /// The schema does not compile (draft 2020-12).
    NotASchema(String),
    /// What is wrong with the instance, a pointer each under the prefix given.
    Problems(Vec<FieldError>),
}

/// Compiles `schema` and checks `instance` against it on the blocking pool: a schema or an
/// instance can be costly (deep nesting, backtracking patterns), and the runtime's workers
/// must stay free.
pub(crate) async fn check_against_schema(
    schema: Value,
    instance: Value,
    prefix: &str,
) -> Result<SchemaVerdict, ApiError> {
    let under = prefix.to_owned();
    blocking::run(
        move || match jsonschema::draft202012::options().build(&schema) {
            Err(error) => SchemaVerdict::NotASchema(error.to_string()),
            Ok(validator) => SchemaVerdict::Problems(
                validator
                    .iter_errors(&instance)
                    .map(|error| FieldError {
                        pointer: format!("{under}{}", error.instance_path()),
                        detail: error.to_string(),
                    })
                    .collect(),
            ),
        },
    )
    .await
    .map_err(|overrun| match overrun {
        Overrun::TooSlow => ApiError::invalid_field(prefix, blocking::too_costly()),
        other => other.into(),
    })
}
