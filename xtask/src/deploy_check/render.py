"""Renders the chart with Helm's own engine (helm-python-sdk binds Helm's Go SDK, so this is
what `helm template` renders) and validates every object against the Kubernetes OpenAPI
schemas of each given version (kubernetes-validate, strict: unknown fields are errors).
Prints {"objects": [...], "unvalidated": [...]} as JSON on stdout for `cargo xtask
deploy-check`, which checks the chart's own rules on them.

Usage: python3 render.py CHART_DIR VALUES_FILE|- KUBERNETES_VERSION...
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

RELEASE = "tenant-registry"


def main() -> int:
    chart_dir, values_file, *versions = sys.argv[1:]
    values = None
    if values_file != "-":
        with open(values_file, encoding="utf-8") as text:
            values = helm.values_from_yaml(text.read())
    lint = helm.lint(chart_dir, values, strict=True, kube_version=f"v{versions[0]}")
    # Severity 1 is information ("icon is recommended"); warnings and errors fail.
    findings = [m for m in lint["messages"] if m["severity"] >= 2] + lint["errors"]
    if findings:
        print(f"helm lint {chart_dir}: {findings}", file=sys.stderr)
        return 1
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=RELEASE, is_install=True)
    objects, unvalidated, failures = [], [], []
    for template, manifest in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(manifest):
            if not document:
                continue
            objects.append(document)
            name = f"{document['kind']}/{document['metadata']['name']} ({template})"
            for version in versions:
                try:
                    kubernetes_validate.validate(document, version, strict=True)
                except kubernetes_validate.SchemaNotFoundError:
                    # A custom resource (the ServiceMonitor): no schema ships for it.
                    unvalidated.append(name)
                    break
                except kubernetes_validate.ValidationError as error:
                    path = ".".join(str(part) for part in error.path)
                    failures.append(f"{name} against {version}: {path}: {error.message}")
    for failure in failures:
        print(failure, file=sys.stderr)
    json.dump({"objects": objects, "unvalidated": unvalidated}, sys.stdout)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
