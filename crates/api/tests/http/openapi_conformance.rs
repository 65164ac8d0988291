//! The OpenAPI document lists every status an operation answers: each operation is driven
//! with no credentials, with a credential that may do nothing, with a URI and header fields
//! over the registry's limits, with a body over the limit, a body that is not JSON and one
//! sent as another media type, and every status seen must be
//! among those the document gives for that operation, and never a 5xx.

use std::collections::BTreeSet;

use axum::http::Method;
use domain::Scope;
use serde_json::{Value, json};
use testkit::TestApp;
use utoipa::OpenApi;
use uuid::Uuid;

/// One operation of the document.
struct Operation {
    method: Method,
    path: String,
    documented: BTreeSet<u16>,
    secured: bool,
    has_body: bool,
}

/// Every operation, its path parameters filled in: slugs with `slug`, products with
/// `product`, any other with `id`.
fn operations(id: Uuid, slug: &str, product: &str) -> Vec<Operation> {
    let document = serde_json::to_value(api::openapi::ApiDoc::openapi()).expect("a document");
    let mut found = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let mut path = template.clone();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] != "path" {
                    continue;
                }
                let name = parameter["name"].as_str().expect("a name");
                let value = if name.contains("slug") {
                    slug.to_owned()
                } else if name.contains("product") {
                    product.to_owned()
                } else {
                    id.to_string()
                };
                path = path.replace(&format!("{{{name}}}"), &value);
            }
            found.push(Operation {
                method,
                path,
                documented: operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .filter_map(|status| status.parse().ok())
                    .collect(),
                secured: operation["security"]
                    .as_array()
                    .is_some_and(|security| !security.is_empty()),
                has_body: operation.get("requestBody").is_some(),
            });
        }
    }
    found
}

#[tokio::test]
async fn every_status_an_operation_answers_is_in_the_document() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let tenant = app.tenant("acme").await;
    let (_, powerless) = app.cheap_key(Some(tenant), &[Scope::AuditWrite]).await;
    let operations = operations(tenant, "acme", "certifai");
    assert!(operations.len() > 50, "{} operations", operations.len());

    let mut undocumented = Vec::new();
    for operation in &operations {
        let mut tries: Vec<(&str, testkit::app::TestRequest<'_>)> = Vec::new();
        let request = || app.request(operation.method.clone(), &operation.path);
        if operation.secured {
            let anonymous = request();
            tries.push((
                "no credentials",
                if operation.has_body {
                    anonymous.json(&json!({}))
                } else {
                    anonymous
                },
            ));
            let weak = request().bearer(&powerless);
            tries.push((
                "a powerless key",
                if operation.has_body {
                    weak.json(&json!({}))
                } else {
                    weak
                },
            ));
        } else {
            tries.push(("as is", request()));
        }
        let long_uri = format!(
            "{}?pad={}",
            operation.path,
            "a".repeat(api::head_limits::MAX_URI_BYTES)
        );
        tries.push((
            "a URI over the limit",
            app.request(operation.method.clone(), &long_uri)
                .bearer(&admin),
        ));
        tries.push((
            "header fields over the limit",
            request()
                .bearer(&admin)
                .header("x-pad", &"a".repeat(api::head_limits::MAX_HEADER_BYTES)),
        ));
        if operation.has_body {
            tries.push((
                "a body over 1 MiB",
                request()
                    .bearer(&admin)
                    .raw("application/json", vec![b' '; 2 * 1024 * 1024]),
            ));
            tries.push((
                "a body that is not JSON",
                request()
                    .bearer(&admin)
                    .raw("application/json", "{\"name\":"),
            ));
            tries.push((
                "a body of another media type",
                request().bearer(&admin).raw("text/plain", "{}"),
            ));
        }
        for (what, request) in tries {
            let status = request.send().await.status;
            if status.is_server_error() || !operation.documented.contains(&status.as_u16()) {
                undocumented.push(format!(
                    "{} {} with {what}: {status} (documented: {:?})",
                    operation.method, operation.path, operation.documented
                ));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "{} answers are not in the document:\n{}",
        undocumented.len(),
        undocumented.join("\n")
    );
}

#[tokio::test]
async fn every_problem_status_the_document_lists_is_described_as_problem_json() {
    let document = serde_json::to_value(api::openapi::ApiDoc::openapi()).expect("a document");
    let mut plain = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                let problem = response["content"]
                    .get("application/problem+json")
                    .is_some_and(|content| content["schema"] != Value::Null);
                if is_error && !problem {
                    plain.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(
        plain.is_empty(),
        "error answers without the problem schema: {plain:?}"
    );
}
