//! `migrate-create`: the next forward-only migration file.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

/// Writes `migrations/V{n+1}__{name}.sql` and prints its path.
pub fn create(root: &Path, name: &str) -> Result<ExitCode, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "migration name {name:?} must be lowercase snake_case, e.g. add_tenant_version"
        ));
    }
    let dir = root.join("migrations");
    let entries =
        fs::read_dir(&dir).map_err(|error| format!("reading {}: {error}", dir.display()))?;
    let mut latest = 0u32;
    for entry in entries {
        let file_name = entry
            .map_err(|error| format!("reading {}: {error}", dir.display()))?
            .file_name();
        let file_name = file_name.to_string_lossy();
        if let Some(version) = file_name
            .strip_prefix('V')
            .and_then(|rest| rest.split_once("__"))
            .and_then(|(version, _)| version.parse::<u32>().ok())
        {
            latest = latest.max(version);
        }
    }
    let path = dir.join(format!("V{}__{name}.sql", latest + 1));
    let header = format!(
        "-- V{}: {}.\n-- Forward-only: once this lands, never edit it; add another migration.\n",
        latest + 1,
        name.replace('_', " ")
    );
    fs::write(&path, header).map_err(|error| format!("writing {}: {error}", path.display()))?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
