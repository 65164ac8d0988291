//! `openapi [--check]`: writes the OpenAPI document to docs/openapi.json, or checks that the
//! committed one is current, and validates it as OpenAPI 3.1 with openapi-spec-validator.

use std::fs;
use std::process::{Command, ExitCode};

use api::openapi::ApiDoc;
use utoipa::OpenApi;

use crate::project_root;

/// Generates (or, with `check`, compares) and validates the document.
pub fn run(check: bool) -> Result<ExitCode, String> {
    let path = project_root().join("docs").join("openapi.json");
    let generated = ApiDoc::openapi()
        .to_pretty_json()
        .map_err(|error| format!("cannot serialise the OpenAPI document: {error}"))?
        + "\n";
    if check {
        let committed = fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            return Err(format!(
                "{} is out of date with the code: run `cargo xtask openapi` and commit it",
                path.display()
            ));
        }
    } else {
        fs::write(&path, &generated)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let validated = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .status()
        .map_err(|error| format!("cannot run python3 for openapi-spec-validator: {error}"))?;
    if validated.success() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err("the OpenAPI document is not valid OpenAPI 3.1 (see above; if the validator is missing, \
             `python3 -m pip install openapi-spec-validator`)"
            .to_owned())
    }
}
