//! The V1 schema's rules, checked against a real PostgreSQL: constraints, cascades, triggers.

use domain::Slug;
use sqlx::PgPool;
use testkit::TestDb;
use uuid::Uuid;

pub(crate) async fn insert_tenant(pool: &PgPool, slug: &str) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO tenants (slug, name, plan) VALUES ($1, $2, 'free') RETURNING id",
    )
    .bind(slug)
    .bind(format!("Tenant {slug}"))
    .fetch_one(pool)
    .await
}

fn constraint(error: &sqlx::Error) -> Option<&str> {
    error
        .as_database_error()
        .and_then(|error| error.constraint())
}

/// Every slug case, with whether the rule accepts it: checked against the domain type and
/// the CHECK constraints alike, so the two cannot drift apart.
fn slug_cases() -> Vec<(String, bool)> {
    vec![
        ("ab".to_owned(), false),
        ("-acme".to_owned(), false),
        ("acme-".to_owned(), false),
        ("Acme".to_owned(), false),
        ("ac_me".to_owned(), false),
        ("ac me".to_owned(), false),
        ("a".repeat(64), false),
        ("a-1".to_owned(), true),
        ("acme".to_owned(), true),
        ("a".repeat(63), true),
    ]
}

#[tokio::test]
async fn slug_rule_is_the_same_in_the_domain_type_and_both_check_constraints() {
    let db = TestDb::migrated().await;
    let owner = insert_tenant(db.pool(), "slug-owner")
        .await
        .expect("owner tenant");
    for (slug, valid) in slug_cases() {
        assert_eq!(Slug::parse(&slug).is_ok(), valid, "domain on {slug:?}");

        let tenant = insert_tenant(db.pool(), &slug).await;
        let project =
            sqlx::query("INSERT INTO tenant_projects (tenant_id, slug, name) VALUES ($1, $2, 'P')")
                .bind(owner)
                .bind(&slug)
                .execute(db.pool())
                .await;
        if valid {
            tenant.unwrap_or_else(|error| panic!("tenant slug {slug:?} refused: {error}"));
            project.unwrap_or_else(|error| panic!("project slug {slug:?} refused: {error}"));
        } else {
            let error = tenant.expect_err(&format!("tenant slug {slug:?} accepted"));
            assert_eq!(constraint(&error), Some("tenants_slug_format"), "{slug:?}");
            let error = project.expect_err(&format!("project slug {slug:?} accepted"));
            assert_eq!(
                constraint(&error),
                Some("tenant_projects_slug_format"),
                "{slug:?}"
            );
        }
    }
}

#[tokio::test]
async fn tenant_defaults_and_unique_keys() {
    let db = TestDb::migrated().await;
    let id = insert_tenant(db.pool(), "acme").await.expect("insert");
    let (status, kind): (String, String) =
        sqlx::query_as("SELECT status::text, kind::text FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .expect("select");
    assert_eq!((status.as_str(), kind.as_str()), ("trial", "customer"));

    let duplicate = insert_tenant(db.pool(), "acme")
        .await
        .expect_err("duplicate slug");
    assert_eq!(constraint(&duplicate), Some("tenants_slug_key"));

    for (column, key) in [
        ("erp_id", "tenants_erp_id_key"),
        ("stripe_id", "tenants_stripe_id_key"),
    ] {
        let set = format!("UPDATE tenants SET {column} = 'X-1' WHERE id = $1");
        sqlx::query(&set)
            .bind(id)
            .execute(db.pool())
            .await
            .expect("first holder");
        let other = insert_tenant(db.pool(), &format!("other-{}", column.replace('_', "-")))
            .await
            .expect("second tenant");
        let error = sqlx::query(&set)
            .bind(other)
            .execute(db.pool())
            .await
            .expect_err("a second tenant with the same id");
        assert_eq!(constraint(&error), Some(key));
    }
    let nulls = insert_tenant(db.pool(), "no-billing-ids").await;
    assert!(
        nulls.is_ok(),
        "many tenants may have no erp_id or stripe_id"
    );
}

#[tokio::test]
async fn tenant_checks_reject_blank_names_and_reversed_contracts() {
    let db = TestDb::migrated().await;
    let blank =
        sqlx::query("INSERT INTO tenants (slug, name, plan) VALUES ('blank', '  ', 'free')")
            .execute(db.pool())
            .await
            .expect_err("blank name");
    assert_eq!(constraint(&blank), Some("tenants_name_not_blank"));

    let reversed = sqlx::query(
        "INSERT INTO tenants (slug, name, plan, contract_starts_on, contract_ends_on)
         VALUES ('dates', 'Dates', 'pro', '2026-02-01', '2026-01-31')",
    )
    .execute(db.pool())
    .await
    .expect_err("contract ends before it starts");
    assert_eq!(
        constraint(&reversed),
        Some("tenants_contract_dates_ordered")
    );

    sqlx::query(
        "INSERT INTO tenants (slug, name, plan, contract_starts_on, contract_ends_on)
         VALUES ('one-day', 'One day', 'pro', '2026-02-01', '2026-02-01')",
    )
    .execute(db.pool())
    .await
    .expect("a contract may end the day it starts");
}

#[tokio::test]
async fn product_config_must_be_a_json_object() {
    let db = TestDb::migrated().await;
    let tenant = insert_tenant(db.pool(), "acme").await.expect("tenant");
    let error = sqlx::query(
        "INSERT INTO tenant_products (tenant_id, product, config) VALUES ($1, 'certifai', '[1]')",
    )
    .bind(tenant)
    .execute(db.pool())
    .await
    .expect_err("an array config");
    assert_eq!(constraint(&error), Some("tenant_products_config_is_object"));
}

#[tokio::test]
async fn idp_config_columns_must_match_its_kind() {
    let db = TestDb::migrated().await;
    let tenant = insert_tenant(db.pool(), "acme").await.expect("tenant");
    let attempts = [
        (
            "oidc without issuer",
            "INSERT INTO tenant_idp_config (tenant_id, kind, name, oidc_client_id) VALUES ($1, 'oidc', 'x', 'c')",
            false,
        ),
        (
            "saml without metadata",
            "INSERT INTO tenant_idp_config (tenant_id, kind, name, saml_entity_id) VALUES ($1, 'saml', 'x', 'e')",
            false,
        ),
        (
            "oidc with saml columns",
            "INSERT INTO tenant_idp_config (tenant_id, kind, name, oidc_issuer, oidc_client_id, saml_entity_id) VALUES ($1, 'oidc', 'x', 'https://i', 'c', 'e')",
            false,
        ),
        (
            "complete oidc",
            "INSERT INTO tenant_idp_config (tenant_id, kind, name, oidc_issuer, oidc_client_id, oidc_client_secret) VALUES ($1, 'oidc', 'x', 'https://i', 'c', '\\x00ff')",
            true,
        ),
        (
            "saml by url",
            "INSERT INTO tenant_idp_config (tenant_id, kind, name, saml_metadata_url, saml_entity_id) VALUES ($1, 'saml', 'x', 'https://m', 'e')",
            true,
        ),
    ];
    for (case, sql, accepted) in attempts {
        let outcome = sqlx::query(sql).bind(tenant).execute(db.pool()).await;
        match (outcome, accepted) {
            (Ok(_), true) => {}
            (Err(error), false) => assert_eq!(
                constraint(&error),
                Some("tenant_idp_config_columns_match_kind"),
                "{case}"
            ),
            (outcome, _) => panic!("{case}: unexpected {outcome:?}"),
        }
    }
}

#[tokio::test]
async fn audit_crud_must_be_one_of_c_r_u_d() {
    let db = TestDb::migrated().await;
    let error = sqlx::query("INSERT INTO audit_log (action, crud) VALUES ('tenant.created', 'x')")
        .execute(db.pool())
        .await
        .expect_err("bad crud");
    assert_eq!(constraint(&error), Some("audit_log_crud_valid"));
}

#[tokio::test]
async fn a_keys_product_must_be_in_the_catalog() {
    let db = TestDb::migrated().await;
    let insert = |product: &'static str| {
        sqlx::query(
            "INSERT INTO api_keys (name, prefix, hash, scopes, product)
             VALUES ('k', md5(random()::text), '$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA',
                     ARRAY['audit:write'], $1)",
        )
        .bind(product)
        .execute(db.pool())
    };
    let error = insert("ghost").await.expect_err("no such product");
    assert_eq!(constraint(&error), Some("api_keys_product_fkey"));
    sqlx::query("INSERT INTO products (id, manifest) VALUES ('billing', '{}')")
        .execute(db.pool())
        .await
        .expect("a product");
    insert("billing").await.expect("a catalog product");
}

async fn seed_every_table(pool: &PgPool) -> Uuid {
    let tenant = insert_tenant(pool, "acme").await.expect("tenant");
    sqlx::query(
        "INSERT INTO products (id, manifest) VALUES ('certifai', '{\"name\": \"Certifai\"}')",
    )
    .execute(pool)
    .await
    .expect("product");
    let rows = [
        "INSERT INTO tenant_projects (tenant_id, slug, name) VALUES ($1, 'web', 'Web')",
        "INSERT INTO tenant_products (tenant_id, product, config)
         VALUES ($1, 'certifai', '{\"seats\": 5}')",
        "INSERT INTO tenant_idp_config (tenant_id, kind, name, saml_metadata_xml, saml_entity_id)
         VALUES ($1, 'saml', 'Okta', '<EntityDescriptor/>', 'urn:acme')",
        "INSERT INTO api_keys (tenant_id, name, prefix, hash, scopes)
         VALUES ($1, 'ci', 'abc123', '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA',
                 '{tenants:read}')",
        "INSERT INTO audit_log (tenant_id, group_id, group_name, action, crud, source_ip, fields)
         VALUES ($1, $1::text, 'acme', 'tenant.created', 'c', '10.0.0.1', '{\"plan\": \"free\"}')",
    ];
    for row in rows {
        sqlx::query(row)
            .bind(tenant)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{row}: {error}"));
    }
    tenant
}

async fn count(pool: &PgPool, table: &str, tenant: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE tenant_id = $1"
    ))
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn every_table_takes_rows_and_reads_them_back() {
    let db = TestDb::migrated().await;
    let tenant = seed_every_table(db.pool()).await;
    for table in [
        "tenant_projects",
        "tenant_products",
        "tenant_idp_config",
        "api_keys",
        "audit_log",
    ] {
        assert_eq!(count(db.pool(), table, tenant).await, 1, "{table}");
    }
    let (scopes, seats, ip): (Vec<String>, i64, String) = sqlx::query_as(
        "SELECT k.scopes, (p.config->>'seats')::int8, host(a.source_ip)
         FROM api_keys k, tenant_products p, audit_log a
         WHERE k.tenant_id = $1 AND p.tenant_id = $1 AND a.tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(db.pool())
    .await
    .expect("joined read");
    assert_eq!(scopes, vec!["tenants:read".to_owned()]);
    assert_eq!(seats, 5);
    assert_eq!(ip, "10.0.0.1");
}

#[tokio::test]
async fn deleting_a_tenant_cascades_but_keeps_its_audit_trail() {
    let db = TestDb::migrated().await;
    let tenant = seed_every_table(db.pool()).await;
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(tenant)
        .execute(db.pool())
        .await
        .expect("delete");
    for table in [
        "tenant_projects",
        "tenant_products",
        "tenant_idp_config",
        "api_keys",
    ] {
        assert_eq!(
            count(db.pool(), table, tenant).await,
            0,
            "{table} rows cascade"
        );
    }
    let (tenant_id, group_id, group_name): (Option<Uuid>, String, String) = sqlx::query_as(
        "SELECT tenant_id, group_id, group_name FROM audit_log WHERE action = 'tenant.created'",
    )
    .fetch_one(db.pool())
    .await
    .expect("the audit row survives");
    assert_eq!(tenant_id, None);
    assert_eq!(group_id, tenant.to_string());
    assert_eq!(group_name, "acme");
}

#[tokio::test]
async fn updated_at_moves_on_update_in_every_table() {
    let db = TestDb::migrated().await;
    let tenant = seed_every_table(db.pool()).await;
    let updates = [
        (
            "tenants",
            "UPDATE tenants SET name = 'Acme 2' WHERE id = $1",
        ),
        (
            "tenant_projects",
            "UPDATE tenant_projects SET name = 'Web 2' WHERE tenant_id = $1",
        ),
        (
            "tenant_products",
            "UPDATE tenant_products SET enabled = false WHERE tenant_id = $1",
        ),
        (
            "tenant_idp_config",
            "UPDATE tenant_idp_config SET enabled = false WHERE tenant_id = $1",
        ),
        (
            "api_keys",
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1",
        ),
    ];
    for (table, update) in updates {
        let key = if table == "tenants" {
            "id"
        } else {
            "tenant_id"
        };
        let read = format!("SELECT created_at, updated_at FROM {table} WHERE {key} = $1");
        // now() is the transaction's start time, so rows written by the seeding transaction
        // and this update differ as long as they are separate transactions.
        let (created, before): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as(&read)
                .bind(tenant)
                .fetch_one(db.pool())
                .await
                .expect("before");
        assert_eq!(
            created, before,
            "{table}: a new row starts with updated_at = created_at"
        );
        sqlx::query(update)
            .bind(tenant)
            .execute(db.pool())
            .await
            .expect("update");
        let (_, after): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as(&read)
                .bind(tenant)
                .fetch_one(db.pool())
                .await
                .expect("after");
        assert!(
            after > before,
            "{table}: updated_at moved from {before} to {after}"
        );
    }
}

#[tokio::test]
async fn an_abandoned_idempotency_claim_frees_its_key() {
    use storage::idempotency::{self, Claim, RecordId};
    let db = TestDb::migrated().await;
    let pool = db.pool();
    let id = RecordId {
        principal: "tenant_key:t:k",
        method: "POST",
        path: "/v1/things",
        key: "k",
    };
    let (holder, _holding) = idempotency::Holder::start(pool).await.expect("a holder");
    let (first, second, third) = (
        holder.in_flight(&id),
        holder.in_flight(&id),
        holder.in_flight(&id),
    );
    let claim = async |request| {
        idempotency::claim(pool, request, "h1", Uuid::new_v4())
            .await
            .expect("claim")
    };
    assert_eq!(claim(&first).await, Claim::Fresh);
    assert_eq!(claim(&second).await, Claim::InProgress);
    sqlx::query(
        "UPDATE idempotency_records SET created_at = now() - interval '10 minutes', holder = NULL",
    )
    .execute(pool)
    .await
    .expect("ageing the claim");
    assert_eq!(
        claim(&third).await,
        Claim::Fresh,
        "a claim whose request never completed does not block the key forever"
    );
}

#[tokio::test]
async fn a_claim_frees_its_key_the_moment_its_holding_process_is_gone() {
    use storage::idempotency::{self, Claim, Holder, RecordId};
    let db = TestDb::migrated().await;
    let pool = db.pool();
    let id = RecordId {
        principal: "tenant_key:t:k",
        method: "POST",
        path: "/v1/things",
        key: "k",
    };
    let (dying, dying_task) = Holder::start(pool).await.expect("a holder");
    let (living, _living_task) = Holder::start(pool).await.expect("another holder");
    let claim = async |holder: &Holder| {
        idempotency::claim(pool, &holder.in_flight(&id), "h1", Uuid::new_v4())
            .await
            .expect("claim")
    };
    assert_eq!(claim(&dying).await, Claim::Fresh);
    assert_eq!(
        claim(&living).await,
        Claim::InProgress,
        "another live process's claim holds"
    );
    // Aborting the task drops its session, as the database sees a killed process's.
    dying_task.abort();
    let _ = dying_task.await;
    let mut answers = Vec::new();
    testkit::within_a_second("the dead holder's claim is dropped", async || {
        let answer = claim(&living).await;
        answers.push(answer.clone());
        answer == Claim::Fresh
    })
    .await;
    assert!(
        answers
            .iter()
            .all(|answer| matches!(answer, Claim::InProgress | Claim::Fresh)),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_claim_of_this_process_that_no_request_here_works_on_frees_its_key() {
    use storage::idempotency::{self, Claim, Holder, RecordId};
    let db = TestDb::migrated().await;
    let pool = db.pool();
    let id = RecordId {
        principal: "tenant_key:t:k",
        method: "POST",
        path: "/v1/things",
        key: "k",
    };
    let (holder, _holding) = Holder::start(pool).await.expect("a holder");
    // As when the claim's commit went through but its answer was lost with the connection:
    // the request that made it has given up, not knowing it holds the key.
    let lost = holder.in_flight(&id);
    assert_eq!(
        idempotency::claim(pool, &lost, "h1", Uuid::new_v4())
            .await
            .expect("claim"),
        Claim::Fresh
    );
    let running = holder.in_flight(&id);
    assert_eq!(
        idempotency::claim(pool, &running, "h1", Uuid::new_v4())
            .await
            .expect("claim"),
        Claim::InProgress,
        "while a request here may still hold it, the claim holds"
    );
    drop((lost, running));
    assert_eq!(
        idempotency::claim(pool, &holder.in_flight(&id), "h1", Uuid::new_v4())
            .await
            .expect("claim"),
        Claim::Fresh
    );
}

#[tokio::test]
async fn a_process_that_lost_its_holder_session_claims_nothing_until_it_holds_again() {
    use storage::idempotency::{self, Claim, Holder, RecordId};
    let db = TestDb::migrated().await;
    let pool = db.pool();
    let (holder, _holding) = Holder::start(pool).await.expect("a holder");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND database =
               (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .execute(pool)
    .await
    .expect("ending the holder's session");
    let id = RecordId {
        principal: "tenant_key:t:k",
        method: "POST",
        path: "/v1/things",
        key: "k",
    };
    let refusal = idempotency::claim(pool, &holder.in_flight(&id), "h1", Uuid::new_v4())
        .await
        .expect_err("no claim without the lock: others would take it for abandoned");
    assert!(storage::is_unavailable(&refusal), "{refusal}");
    testkit::within_a_second("the holder takes its lock again", async || {
        matches!(
            idempotency::claim(pool, &holder.in_flight(&id), "h1", Uuid::new_v4()).await,
            Ok(Claim::Fresh)
        )
    })
    .await;
}

#[tokio::test]
async fn an_idempotency_record_never_belongs_to_a_shared_name() {
    use storage::idempotency::{self, RecordId};
    let db = TestDb::migrated().await;
    let (holder, _holding) = idempotency::Holder::start(db.pool())
        .await
        .expect("a holder");
    for principal in ["anonymous", "", "oidc_user:platform:", "api_key:1234"] {
        let id = RecordId {
            principal,
            method: "POST",
            path: "/v1/things",
            key: "k",
        };
        let error = idempotency::claim(db.pool(), &holder.in_flight(&id), "h", Uuid::new_v4())
            .await
            .expect_err(principal);
        assert_eq!(
            error
                .as_database_error()
                .and_then(|error| error.constraint()),
            Some("idempotency_records_principal_format"),
            "{principal:?}"
        );
    }
}
