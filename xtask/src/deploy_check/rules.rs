//! The chart's own rules, checked on the objects it rendered: what a schema cannot say.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

/// Variables a deployment never sets: dev's key file (dev only), and DNS_RESOLVER's former
/// name. The values file still names them, so they stay reachable.
const NOT_FOR_DEPLOYMENTS: [&str; 2] = ["DEV_ENCRYPTION_KEY_FILE", "DNS_RESOLVER_URL"];
/// Taken from Secrets only, never from a plain value.
const SECRET_VARIABLES: [&str; 2] = ["DATABASE_URL", "ENCRYPTION_KEYS"];

/// The Dockerfile builds with rust-toolchain.toml's Rust, and the chart's appVersion (the
/// default image tag) is the workspace version that `cargo xtask image` tags.
pub fn pins_agree(root: &Path, rust_version: &str) -> Result<(), String> {
    let dockerfile = read(&root.join("Dockerfile"))?;
    let expected = format!("ARG RUST_VERSION={rust_version}");
    if !dockerfile.lines().any(|line| line.trim() == expected) {
        return Err(format!(
            "the Dockerfile does not say `{expected}` (rust-toolchain.toml's channel)"
        ));
    }
    let chart = read(&root.join(super::CHART).join("Chart.yaml"))?;
    let app_version = format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"));
    if !chart.lines().any(|line| line.trim() == app_version) {
        return Err(format!(
            "Chart.yaml does not say `{app_version}` (the workspace version)"
        ));
    }
    Ok(())
}

pub fn check(root: &Path, objects: &[Value], everything_on: bool) -> Result<(), String> {
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    let optional = ["HorizontalPodAutoscaler", "ServiceMonitor"];
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
    ] {
        if !kinds.contains(kind) {
            return Err(format!("no {kind} rendered"));
        }
    }
    for kind in optional {
        if kinds.contains(kind) != everything_on {
            return Err(format!(
                "a {kind} {} rendered",
                if everything_on { "is not" } else { "is" }
            ));
        }
    }
    let deployment = of_kind(objects, "Deployment")?;
    let pod = &deployment["spec"]["template"]["spec"];
    init_container_migrates(pod)?;
    for container in containers(pod) {
        locked_down(pod, container)?;
        secrets_from_secrets(container)?;
    }
    probes_are_served(root, pod)?;
    variables_reachable(root, pod, everything_on)?;
    traces_follow_otel_values(pod, everything_on)?;
    if everything_on {
        if deployment["spec"].get("replicas").is_some() {
            return Err("the Deployment sets replicas although the autoscaler owns them".into());
        }
        service_monitor_scrapes_the_service(objects)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value, String> {
    objects
        .iter()
        .find(|object| object["kind"] == kind)
        .ok_or_else(|| format!("no {kind} rendered"))
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(|list| pod[list].as_array().into_iter().flatten())
}

/// The pod's first init container runs `tenant-registry-migrate up` from the server's image.
fn init_container_migrates(pod: &Value) -> Result<(), String> {
    let init = &pod["initContainers"][0];
    if init["command"] != json!(["tenant-registry-migrate", "up"]) {
        return Err(format!(
            "the first init container runs {}, not tenant-registry-migrate up",
            init["command"]
        ));
    }
    let server = &pod["containers"][0];
    if init["image"] != server["image"] {
        return Err("the migrate init container's image is not the server's".into());
    }
    if server.get("command").is_some() {
        return Err("the server container overrides the image's default command".into());
    }
    Ok(())
}

/// Non-root, read-only root, no privilege escalation, no capabilities, RuntimeDefault seccomp.
fn locked_down(pod: &Value, container: &Value) -> Result<(), String> {
    let name = &container["name"];
    let context = &container["securityContext"];
    let either = |field: &str| {
        let own = &context[field];
        if own.is_null() {
            &pod["securityContext"][field]
        } else {
            own
        }
    };
    let rules = [
        (either("runAsNonRoot") == &json!(true), "runAsNonRoot"),
        (
            context["readOnlyRootFilesystem"] == json!(true),
            "readOnlyRootFilesystem",
        ),
        (
            context["allowPrivilegeEscalation"] == json!(false),
            "no privilege escalation",
        ),
        (
            context["capabilities"]["drop"] == json!(["ALL"]),
            "capabilities drop ALL",
        ),
        (
            either("seccompProfile")["type"] == "RuntimeDefault",
            "seccomp RuntimeDefault",
        ),
    ];
    match rules.iter().find(|(held, _)| !held) {
        Some((_, rule)) => Err(format!("container {name} lacks {rule}")),
        None => Ok(()),
    }
}

fn secrets_from_secrets(container: &Value) -> Result<(), String> {
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap_or_default();
        if SECRET_VARIABLES.contains(&name) && entry["valueFrom"]["secretKeyRef"].is_null() {
            return Err(format!(
                "{name} of container {} is not from a Secret",
                container["name"]
            ));
        }
    }
    Ok(())
}

/// Every probe asks a path the server documents in docs/openapi.json.
fn probes_are_served(root: &Path, pod: &Value) -> Result<(), String> {
    let document: Value = serde_json::from_str(&read(&root.join("docs/openapi.json"))?)
        .map_err(|error| format!("docs/openapi.json: {error}"))?;
    let server = &pod["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = server[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_default();
        if document["paths"][path].is_null() {
            return Err(format!(
                "the {probe} asks {path:?}, which the server does not serve"
            ));
        }
    }
    Ok(())
}

/// Each variable the binaries read (their `env = "…"` attributes) is named in values.yaml;
/// with every part on, each is set in the rendered pod but the two no deployment sets.
fn variables_reachable(root: &Path, pod: &Value, everything_on: bool) -> Result<(), String> {
    let values = read(&root.join(super::CHART).join("values.yaml"))?;
    let mut variables = BTreeSet::new();
    let mut sources = vec![
        root.join("bins/server/src/config.rs"),
        root.join("bins/migrate/src/main.rs"),
    ];
    let settings = root.join("bins/server/src/config");
    let entries = std::fs::read_dir(&settings)
        .map_err(|error| format!("reading {}: {error}", settings.display()))?;
    sources.extend(
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "rs")),
    );
    for source in &sources {
        let text = read(source)?;
        variables.extend(
            text.split("env = \"")
                .skip(1)
                .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_owned())),
        );
    }
    if variables.is_empty() {
        return Err("found no `env = \"…\"` in the binaries' configuration".into());
    }
    let named = |name: &str| {
        values
            .split(|c: char| !c.is_ascii_uppercase() && c != '_')
            .any(|word| word == name)
    };
    if let Some(missing) = variables.iter().find(|name| !named(name)) {
        return Err(format!(
            "values.yaml does not name {missing}, which the binaries read"
        ));
    }
    if everything_on {
        let set: BTreeSet<&str> = containers(pod)
            .flat_map(|container| container["env"].as_array().into_iter().flatten())
            .filter_map(|entry| entry["name"].as_str())
            .collect();
        let unset = variables.iter().find(|name| {
            !set.contains(name.as_str()) && !NOT_FOR_DEPLOYMENTS.contains(&name.as_str())
        });
        if let Some(unset) = unset {
            return Err(format!("{unset} is not set in the pod"));
        }
    }
    Ok(())
}

/// Trace export is off by default; with `otel.endpoint` set the server container gets the
/// endpoint and a resource naming its pod after the values' own attributes.
fn traces_follow_otel_values(pod: &Value, everything_on: bool) -> Result<(), String> {
    let env = pod["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|entry| entry["name"] == name)
            .and_then(|entry| entry["value"].as_str().map(str::to_owned))
    };
    let endpoint = value("OTEL_EXPORTER_OTLP_ENDPOINT");
    if !everything_on {
        return match endpoint {
            None => Ok(()),
            Some(endpoint) => Err(format!("traces are exported by default, to {endpoint}")),
        };
    }
    if endpoint.is_none() {
        return Err("otel.endpoint set, but OTEL_EXPORTER_OTLP_ENDPOINT is not".into());
    }
    let resource = value("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let expected = "deployment.environment=ci,k8s.pod.name=$(OTEL_POD_NAME),k8s.namespace.name=$(OTEL_POD_NAMESPACE)";
    if resource != expected {
        return Err(format!(
            "OTEL_RESOURCE_ATTRIBUTES is {resource:?}, not {expected:?}"
        ));
    }
    let position = |name: &str| env.iter().position(|entry| entry["name"] == name);
    // Kubernetes expands $(VAR) only from variables defined before it.
    if position("OTEL_POD_NAME") > position("OTEL_RESOURCE_ATTRIBUTES") {
        return Err("OTEL_POD_NAME comes after OTEL_RESOURCE_ATTRIBUTES, which uses it".into());
    }
    Ok(())
}

/// The ServiceMonitor (a custom resource: no schema checks it) selects the chart's Service
/// and scrapes one of its ports.
fn service_monitor_scrapes_the_service(objects: &[Value]) -> Result<(), String> {
    let monitor = of_kind(objects, "ServiceMonitor")?;
    let service = of_kind(objects, "Service")?;
    let labels = &service["metadata"]["labels"];
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or("the ServiceMonitor has no matchLabels")?;
    if selector.iter().any(|(key, value)| &labels[key] != value) {
        return Err("the ServiceMonitor's selector does not match the Service's labels".into());
    }
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| &port["name"])
        .collect();
    for endpoint in monitor["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !ports.contains(&&endpoint["port"]) || endpoint["path"] != "/metrics" {
            return Err(format!(
                "the ServiceMonitor scrapes {endpoint}, not a port's /metrics"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        let locked = json!({
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}
        });
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "migrate", "image": "tr:1",
                                "command": ["tenant-registry-migrate", "up"],
                                "securityContext": locked}],
            "containers": [{"name": "server", "image": "tr:1", "securityContext": locked}]
        })
    }

    #[test]
    fn a_pod_that_migrates_first_from_the_servers_image_passes() {
        assert_eq!(init_container_migrates(&pod()), Ok(()));
        let mut other_image = pod();
        other_image["initContainers"][0]["image"] = json!("tr:0");
        assert!(init_container_migrates(&other_image).is_err());
        let mut no_init = pod();
        no_init["initContainers"] = json!([]);
        assert!(init_container_migrates(&no_init).is_err());
    }

    #[test]
    fn a_container_missing_one_lock_is_named() {
        let pod = pod();
        assert!(containers(&pod).all(|container| locked_down(&pod, container).is_ok()));
        let mut writable = pod.clone();
        writable["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = json!(false);
        assert_eq!(
            locked_down(&writable, &writable["containers"][0]),
            Err("container \"server\" lacks readOnlyRootFilesystem".to_owned())
        );
        let mut root_allowed = pod.clone();
        root_allowed["securityContext"]["runAsNonRoot"] = json!(false);
        assert!(locked_down(&root_allowed, &root_allowed["initContainers"][0]).is_err());
    }

    #[test]
    fn a_plain_database_url_is_refused() {
        let plain =
            json!({"name": "server", "env": [{"name": "DATABASE_URL", "value": "postgres://"}]});
        assert!(secrets_from_secrets(&plain).is_err());
    }

    #[test]
    fn a_service_monitor_must_select_the_service_and_scrape_a_port_of_it() {
        let service = json!({"kind": "Service", "metadata": {"labels": {"app": "tr", "v": "1"}},
                             "spec": {"ports": [{"name": "http"}, {"name": "admin"}]}});
        let monitor = |labels: Value, port: &str| {
            json!({"kind": "ServiceMonitor", "spec": {"selector": {"matchLabels": labels},
                   "endpoints": [{"port": port, "path": "/metrics"}]}})
        };
        let objects = |m: Value| vec![service.clone(), m];
        assert_eq!(
            service_monitor_scrapes_the_service(&objects(monitor(json!({"app": "tr"}), "admin"))),
            Ok(())
        );
        assert!(
            service_monitor_scrapes_the_service(&objects(monitor(json!({"app": "x"}), "admin")))
                .is_err()
        );
        assert!(
            service_monitor_scrapes_the_service(&objects(monitor(json!({"app": "tr"}), "metrics")))
                .is_err()
        );
    }
}
