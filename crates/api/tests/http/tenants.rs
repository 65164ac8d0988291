//! The tenants API through the whole router against a real PostgreSQL.

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{TestApp, TestResponse};
use uuid::Uuid;

async fn create(app: &TestApp, key: &str, body: Value) -> TestResponse {
    app.request(Method::POST, "/v1/tenants")
        .bearer(key)
        .json(&body)
        .send()
        .await
}

fn id_of(response: &TestResponse) -> String {
    response.json()["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_tenant_lives_from_creation_to_purge() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;

    let created = create(
        &app,
        &admin,
        json!({"slug": "acme", "name": "Acme Corp", "plan": "pro", "erp_id": "ERP-1",
               "contact_email": "alice@acme.com", "contract_starts_on": "2026-01-01"}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let id = id_of(&created);
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/tenants/{id}").as_str())
    );
    assert_eq!(created.header("etag"), Some("\"1\""));
    let body = created.json();
    assert_eq!(body["status"], "trial");
    assert_eq!(body["kind"], "customer");
    assert_eq!(body["contact_email"], "alice@acme.com");
    assert_eq!(body["products"], json!([]));
    assert!(
        body["trial_ends_at"].is_string(),
        "a trial gets its default end"
    );

    let by_slug = app
        .request(Method::GET, "/v1/tenants/by-slug/acme")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(by_slug.status, StatusCode::OK);
    assert_eq!(by_slug.json()["id"], json!(id));

    let patched = app
        .request(Method::PATCH, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .header("if-match", "\"1\"")
        .raw(
            "application/merge-patch+json",
            json!({"name": "Acme Inc", "erp_id": null}).to_string(),
        )
        .send()
        .await;
    assert_eq!(
        patched.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&patched.body)
    );
    assert_eq!(patched.header("etag"), Some("\"2\""));
    assert_eq!(patched.json()["name"], "Acme Inc");
    assert_eq!(patched.json()["erp_id"], Value::Null);

    let activated = app
        .request(Method::POST, &format!("/v1/tenants/{id}/transitions"))
        .bearer(&admin)
        .json(&json!({"to": "active", "reason": "contract signed"}))
        .send()
        .await;
    assert_eq!(activated.json()["status"], "active");

    let archived = app
        .request(Method::DELETE, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        (archived.status, archived.json()["status"].clone()),
        (StatusCode::OK, json!("archived"))
    );
    let again = app
        .request(Method::DELETE, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(again.status, StatusCode::OK, "archiving is idempotent");
    assert_eq!(
        again.json()["version"],
        archived.json()["version"],
        "and changes nothing the second time"
    );

    let purged = app
        .request(Method::DELETE, &format!("/v1/tenants/{id}?purge=true"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(purged.status, StatusCode::ACCEPTED);
    let operation = purged.json();
    assert_eq!(
        (
            operation["kind"].as_str(),
            operation["state"].as_str(),
            operation["done"].as_bool()
        ),
        (Some("tenant.purge"), Some("succeeded"), Some(true)),
        "nothing to tear down: purged at once"
    );
    let location = purged
        .header("location")
        .expect("where the operation is")
        .to_owned();
    assert_eq!(
        location,
        format!(
            "/v1/operations/{}",
            operation["id"].as_str().unwrap_or_default()
        )
    );
    let read_back = app
        .request(Method::GET, &location)
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(read_back.json()["state"], "succeeded");
    let gone = app
        .request(Method::GET, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    let trail: Vec<(Option<Uuid>, String, String)> = sqlx::query_as(
        "SELECT tenant_id, group_id, action FROM audit_log WHERE target_type = 'tenant' ORDER BY id",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("audit trail");
    let actions: Vec<&str> = trail.iter().map(|(_, _, action)| action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "tenant.created",
            "tenant.updated",
            "tenant.transitioned",
            "tenant.archived",
            "tenant.purged"
        ]
    );
    assert!(
        trail
            .iter()
            .all(|(tenant_id, group_id, _)| tenant_id.is_none() && *group_id == id),
        "the trail outlives the tenant, unlinked but still naming it"
    );
    let fields: Value =
        sqlx::query_scalar("SELECT fields FROM audit_log WHERE action = 'tenant.updated'")
            .fetch_one(app.db.pool())
            .await
            .expect("fields");
    assert_eq!(fields, json!({"fields": "name,erp_id"}));
}

#[tokio::test]
async fn every_illegal_transition_is_a_409_listing_the_allowed_targets() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let illegal = [
        ("demo", vec!["demo", "trial", "frozen"]),
        ("trial", vec!["trial", "demo"]),
        ("active", vec!["active", "demo", "trial"]),
        ("frozen", vec!["frozen", "demo", "trial"]),
        ("archived", vec!["archived", "demo", "trial", "active"]),
    ];
    for (from, targets) in illegal {
        for to in targets {
            let slug = format!("t-{from}-{to}");
            let status = if from == "demo" || from == "trial" || from == "active" {
                from
            } else {
                "active"
            };
            let id = id_of(
                &create(
                    &app,
                    &admin,
                    json!({"slug": slug, "name": "T", "plan": "pro", "status": status}),
                )
                .await,
            );
            if from == "frozen" || from == "archived" {
                let moved = app
                    .request(Method::POST, &format!("/v1/tenants/{id}/transitions"))
                    .bearer(&admin)
                    .json(&json!({"to": from, "reason": "setup"}))
                    .send()
                    .await;
                assert_eq!(moved.status, StatusCode::OK);
            }
            let refused = app
                .request(Method::POST, &format!("/v1/tenants/{id}/transitions"))
                .bearer(&admin)
                .json(&json!({"to": to, "reason": "test"}))
                .send()
                .await;
            assert_eq!(refused.status, StatusCode::CONFLICT, "{from} -> {to}");
            let allowed: Vec<String> = refused.json()["allowed"]
                .as_array()
                .expect("allowed")
                .iter()
                .map(|status| status.as_str().unwrap_or_default().to_owned())
                .collect();
            let expected: Vec<String> = from
                .parse::<domain::TenantStatus>()
                .expect("status")
                .allowed_transitions()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(allowed, expected, "{from} -> {to}");
        }
    }
}

#[tokio::test]
async fn pagination_over_125_tenants_has_no_duplicates_or_gaps_while_rows_arrive() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    for n in 0..125 {
        app.tenant(&format!("tenant-{n:03}")).await;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/tenants?limit=20&cursor={cursor}"),
            None => "/v1/tenants?limit=20".to_owned(),
        };
        let page = app
            .request(Method::GET, &path)
            .bearer(&admin)
            .send()
            .await
            .json();
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item["slug"].as_str().unwrap_or_default().to_owned()),
        );
        // Rows keep arriving between pages, as they would in production.
        app.tenant(&format!("late-{added:02}")).await;
        added += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no tenant appears twice");
    for n in 0..125 {
        assert!(
            seen.contains(&format!("tenant-{n:03}")),
            "tenant-{n:03} was skipped"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_of_one_slug_give_one_201_and_nineteen_409s() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let attempts = (0..20).map(|_| {
        create(
            &app,
            &admin,
            json!({"slug": "contested", "name": "C", "plan": "pro"}),
        )
    });
    let responses = futures::future::join_all(attempts).await;
    let created = responses
        .iter()
        .filter(|response| response.status == StatusCode::CREATED)
        .count();
    let conflicts: Vec<&TestResponse> = responses
        .iter()
        .filter(|response| response.status == StatusCode::CONFLICT)
        .collect();
    assert_eq!((created, conflicts.len()), (1, 19));
    assert!(
        conflicts
            .iter()
            .all(|response| response.pointers() == vec!["/slug"]),
        "each 409 names the field"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_patches_with_the_same_if_match_give_one_200_and_one_412() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let id = id_of(
        &create(
            &app,
            &admin,
            json!({"slug": "acme", "name": "A", "plan": "pro"}),
        )
        .await,
    );
    let patch = |name: &'static str| {
        app.request(Method::PATCH, &format!("/v1/tenants/{id}"))
            .bearer(&admin)
            .header("if-match", "\"1\"")
            .json(&json!({"name": name}))
            .send()
    };
    let (first, second) = tokio::join!(patch("First"), patch("Second"));
    let mut statuses = vec![first.status, second.status];
    statuses.sort();
    assert_eq!(
        statuses,
        vec![StatusCode::OK, StatusCode::PRECONDITION_FAILED]
    );
}

#[tokio::test]
async fn if_none_match_gives_304_and_a_stale_if_match_412() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let id = id_of(
        &create(
            &app,
            &admin,
            json!({"slug": "acme", "name": "A", "plan": "pro"}),
        )
        .await,
    );
    let cached = app
        .request(Method::GET, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .header("if-none-match", "\"1\"")
        .send()
        .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());
    let stale = app
        .request(Method::PATCH, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .header("if-match", "\"7\"")
        .json(&json!({"plan": "free"}))
        .send()
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn if_match_is_required_when_configured() {
    let app = TestApp::with_settings(api::Settings {
        require_if_match: true,
        ..testkit::settings()
    })
    .await;
    let admin = app.admin_key().await;
    let id = id_of(
        &create(
            &app,
            &admin,
            json!({"slug": "acme", "name": "A", "plan": "pro"}),
        )
        .await,
    );
    let without = app
        .request(Method::PATCH, &format!("/v1/tenants/{id}"))
        .bearer(&admin)
        .json(&json!({"plan": "free"}))
        .send()
        .await;
    assert_eq!(without.status, StatusCode::PRECONDITION_REQUIRED);
}

#[tokio::test]
async fn an_idempotent_create_replays_and_a_reused_key_with_another_body_is_refused() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let send = |body: Value| {
        app.request(Method::POST, "/v1/tenants")
            .bearer(&admin)
            .header("idempotency-key", "create-acme-1")
            .json(&body)
            .send()
    };
    let body = json!({"slug": "acme", "name": "A", "plan": "pro"});
    let first = send(body.clone()).await;
    let replay = send(body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        replay.status,
        StatusCode::CREATED,
        "replayed, not a 409 for the taken slug"
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.header("location"), first.header("location"));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(app.db.pool())
        .await
        .expect("count");
    assert_eq!(tenants, 1, "the tenant was created once");

    let other = send(json!({"slug": "other", "name": "O", "plan": "pro"})).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);

    let another_principal = app.admin_key().await;
    let theirs = app
        .request(Method::POST, "/v1/tenants")
        .bearer(&another_principal)
        .header("idempotency-key", "create-acme-1")
        .json(&json!({"slug": "theirs", "name": "T", "plan": "pro"}))
        .send()
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED, "keys are per principal");
}

#[tokio::test]
async fn a_tenant_principal_sees_only_its_own_tenant() {
    let app = TestApp::new().await;
    let own = app.tenant("acme").await;
    let other = app.tenant("globex").await;
    let (_, key) = app
        .key(Some(own), &[Scope::TenantsRead, Scope::TenantsWrite])
        .await;
    let theirs = app
        .request(Method::GET, &format!("/v1/tenants/{other}"))
        .bearer(&key)
        .send()
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let by_slug = app
        .request(Method::GET, "/v1/tenants/by-slug/globex")
        .bearer(&key)
        .send()
        .await;
    assert_eq!(by_slug.status, StatusCode::NOT_FOUND);
    let patch = app
        .request(Method::PATCH, &format!("/v1/tenants/{other}"))
        .bearer(&key)
        .json(&json!({"name": "Mine now"}))
        .send()
        .await;
    assert_eq!(patch.status, StatusCode::NOT_FOUND);
    let list = app
        .request(Method::GET, "/v1/tenants")
        .bearer(&key)
        .send()
        .await
        .json();
    let ids: Vec<&Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| &item["id"])
        .collect();
    assert_eq!(ids, vec![&json!(own)]);
    let create = create(
        &app,
        &key,
        json!({"slug": "mine", "name": "M", "plan": "pro"}),
    )
    .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_contact_email_is_not_stored_in_clear() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    create(
        &app,
        &admin,
        json!({"slug": "acme", "name": "A", "plan": "pro", "contact_email": "alice@acme.com"}),
    )
    .await;
    let row: String = sqlx::query_scalar("SELECT row_to_json(t)::text FROM tenants t")
        .fetch_one(app.db.pool())
        .await
        .expect("the row");
    assert!(!row.contains("alice"), "{row}");
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT contact_email_encrypted FROM tenants")
        .fetch_one(app.db.pool())
        .await
        .expect("ciphertext");
    assert!(!sealed.windows(5).any(|window| window == b"alice"));
    let audit: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(a)::text, '') FROM audit_log a")
            .fetch_one(app.db.pool())
            .await
            .expect("audit");
    assert!(!audit.contains("alice"), "no PII in the audit trail");
}

#[tokio::test]
async fn a_failed_change_leaves_no_audit_record() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    create(
        &app,
        &admin,
        json!({"slug": "acme", "name": "A", "plan": "pro", "stripe_id": "cus_1"}),
    )
    .await;
    let duplicate = create(
        &app,
        &admin,
        json!({"slug": "globex", "name": "G", "plan": "pro", "stripe_id": "cus_1"}),
    )
    .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.pointers(), vec!["/stripe_id"]);
    let records: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'tenant.created'")
            .fetch_one(app.db.pool())
            .await
            .expect("count");
    assert_eq!(
        records, 1,
        "only the tenant that exists has a creation record"
    );
}

#[tokio::test]
async fn invalid_input_lists_every_problem_and_purge_has_its_rules() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    let invalid = create(
        &app,
        &admin,
        json!({"slug": "-bad", "name": "", "plan": "Pro", "status": "frozen"}),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        invalid.pointers(),
        vec!["/slug", "/name", "/plan", "/status"]
    );

    let id = id_of(
        &create(
            &app,
            &admin,
            json!({"slug": "acme", "name": "A", "plan": "pro"}),
        )
        .await,
    );
    let early = app
        .request(Method::DELETE, &format!("/v1/tenants/{id}?purge=true"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "only archived tenants are purged"
    );

    let tenant = Uuid::parse_str(&id).expect("uuid");
    let (_, writer) = app
        .key(None, &[Scope::TenantsWrite, Scope::TenantsRead])
        .await;
    app.request(Method::DELETE, &format!("/v1/tenants/{id}"))
        .bearer(&writer)
        .send()
        .await;
    let not_admin = app
        .request(Method::DELETE, &format!("/v1/tenants/{id}?purge=true"))
        .bearer(&writer)
        .send()
        .await;
    assert_eq!(
        not_admin.status,
        StatusCode::FORBIDDEN,
        "purging needs platform:admin"
    );
    assert!(
        storage::tenants::exists(app.db.pool(), tenant)
            .await
            .expect("lookup")
    );

    let filters = app
        .request(Method::GET, "/v1/tenants?status=paused&limit=0")
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(filters.pointers(), vec!["/status", "/limit"]);
}

#[tokio::test]
async fn list_filters_narrow_the_result() {
    let app = TestApp::new().await;
    let admin = app.admin_key().await;
    create(
        &app,
        &admin,
        json!({"slug": "acme", "name": "Acme", "plan": "pro", "status": "active"}),
    )
    .await;
    create(
        &app,
        &admin,
        json!({"slug": "globex", "name": "Globex", "plan": "free"}),
    )
    .await;
    create(&app, &admin, json!({"slug": "initech", "name": "Initech ACME partner", "plan": "free", "kind": "demo", "status": "demo"})).await;
    let slugs = |path: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let page = app
                .request(Method::GET, path)
                .bearer(&admin)
                .send()
                .await
                .json();
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|item| item["slug"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        slugs("/v1/tenants?status=active&status=demo").await,
        vec!["acme", "initech"]
    );
    assert_eq!(
        slugs("/v1/tenants?plan=free").await,
        vec!["globex", "initech"]
    );
    assert_eq!(slugs("/v1/tenants?kind=demo").await, vec!["initech"]);
    assert_eq!(slugs("/v1/tenants?q=acme").await, vec!["acme", "initech"]);
    assert_eq!(
        slugs("/v1/tenants?created_before=2000-01-01T00:00:00Z").await,
        Vec::<String>::new()
    );
}
