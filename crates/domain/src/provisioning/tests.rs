//! The plan rules, names and states.

use super::*;
use serde_json::json;

fn plan(value: serde_json::Value) -> Plan {
    serde_json::from_value(value).expect("a plan")
}

fn pointers(plan: &Plan) -> Vec<String> {
    plan.problems()
        .into_iter()
        .map(|(pointer, _)| pointer)
        .collect()
}

fn full() -> Plan {
    plan(json!({"steps": [
        {"kind": "database", "isolation": "schema"},
        {"kind": "migrations"},
        {"kind": "seed", "statements": ["INSERT INTO settings (tenant_id) VALUES ($1)"]},
        {"kind": "roles", "roles": [{"name": "tenant-admin", "permissions": ["documents:write"]}]},
        {"kind": "hook", "url": "https://certifai.example/hooks/provisioning"}
    ]}))
}

#[test]
fn a_full_plan_has_no_problems_and_five_attempts_by_default() {
    let plan = full();
    assert!(plan.problems().is_empty(), "{:?}", plan.problems());
    assert_eq!(plan.max_attempts, DEFAULT_MAX_ATTEMPTS);
}

#[test]
fn rejects_migrations_without_a_database_step_before_them() {
    let plan = plan(
        json!({"steps": [{"kind": "migrations"}, {"kind": "database", "isolation": "schema"}]}),
    );
    assert_eq!(pointers(&plan), ["/provisioning/steps/0"]);
}

#[test]
fn rejects_a_seed_before_the_migrations() {
    let plan = plan(json!({"steps": [
        {"kind": "database", "isolation": "database"},
        {"kind": "seed", "statements": ["SELECT 1"]},
        {"kind": "migrations"}
    ]}));
    assert_eq!(pointers(&plan), ["/provisioning/steps/1"]);
}

#[test]
fn rejects_a_step_kind_twice_and_bad_roles() {
    let plan = plan(json!({"steps": [
        {"kind": "roles", "roles": [
            {"name": "Tenant Admin", "permissions": ["Documents"]},
            {"name": "viewer", "permissions": []},
            {"name": "viewer", "permissions": []}
        ]},
        {"kind": "roles", "roles": [{"name": "other", "permissions": []}]}
    ]}));
    assert_eq!(
        pointers(&plan),
        [
            "/provisioning/steps/0/roles/0/name",
            "/provisioning/steps/0/roles/0/permissions/0",
            "/provisioning/steps/0/roles/2/name",
            "/provisioning/steps/1"
        ]
    );
}

#[test]
fn rejects_a_reference_that_names_no_variable_or_path() {
    let plan = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "lower"}},
        {"kind": "hook", "url": "ftp://x", "secret": {"file": "relative"}}
    ]}));
    assert_eq!(
        pointers(&plan),
        [
            "/provisioning/steps/0/cluster/env",
            "/provisioning/steps/1/url",
            "/provisioning/steps/1/secret/file"
        ]
    );
}

#[test]
fn rejects_a_variable_outside_the_product_prefix() {
    let plan = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "DATABASE_URL"}}
    ]}));
    assert_eq!(pointers(&plan), ["/provisioning/steps/0/cluster/env"]);
}

#[test]
fn rejects_an_unknown_step_kind_when_read() {
    let read: Result<Plan, _> =
        serde_json::from_value(json!({"steps": [{"kind": "shell", "command": "rm"}]}));
    assert!(read.is_err());
}

#[test]
fn teardown_tells_the_product_then_backs_up_before_it_drops() {
    let kinds: Vec<&str> = full().teardown().iter().map(Teardown::kind).collect();
    assert_eq!(kinds, ["hook", "backup", "drop", "roles"]);
}

#[test]
fn names_come_from_the_tenant_id_and_the_product() {
    let id = Uuid::parse_str("0190a0b0-c0d0-7e00-8000-000000000001").expect("uuid");
    assert_eq!(
        tenant_object_name(id),
        "tenant_0190a0b0c0d07e008000000000000001"
    );
    assert_eq!(
        default_cluster_env("billing-sync"),
        "PRODUCT_DATABASE_BILLING_SYNC"
    );
    assert_eq!(
        default_hook_secret_env("certifai"),
        "PRODUCT_HOOK_SECRET_CERTIFAI"
    );
}

#[test]
fn retries_back_off_doubling_up_to_an_hour() {
    let base = TimeDelta::seconds(10);
    assert_eq!(retry_delay(base, 1), TimeDelta::seconds(10));
    assert_eq!(retry_delay(base, 3), TimeDelta::seconds(40));
    assert_eq!(retry_delay(base, 40), TimeDelta::hours(1));
}

#[test]
fn states_read_back_from_their_labels() {
    for state in ProvisioningState::ALL {
        assert_eq!(
            state.as_str().parse::<ProvisioningState>().ok(),
            Some(*state)
        );
    }
    assert!("done".parse::<ProvisioningState>().is_err());
}

#[test]
fn teardown_kinds_name_the_teardown_of_the_plan_they_come_from() {
    let whole = full();
    let named: Vec<&str> = whole.teardown().iter().map(Teardown::kind).collect();
    assert_eq!(teardown_kinds(&whole.kinds()), named);
    assert_eq!(named, ["hook", "backup", "drop", "roles"]);
    let bare = plan(json!({"steps": [{"kind": "roles", "roles": []}]}));
    assert_eq!(teardown_kinds(&bare.kinds()), ["roles"]);
}

#[test]
fn step_kind_knows_only_the_kinds_of_steps() {
    assert_eq!(step_kind("seed"), Some("seed"));
    assert_eq!(step_kind("backup"), None);
    assert_eq!(step_kind("Seed"), None);
}

#[test]
fn a_hook_request_id_differs_by_goal_and_generation() {
    let tenant = Uuid::nil();
    let provision = hook_request_id(tenant, "certifai", "provision", 1);
    assert_eq!(
        provision,
        "prov_00000000000000000000000000000000_certifai_provision_1"
    );
    assert_ne!(
        provision,
        hook_request_id(tenant, "certifai", "deprovision", 2)
    );
    assert_ne!(
        provision,
        hook_request_id(tenant, "certifai", "provision", 2)
    );
}

#[test]
fn rejects_a_reference_to_another_products_variable_or_a_climbing_path() {
    let borrowing = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "PRODUCT_DATABASE_BILLING"}},
        {"kind": "hook", "url": "https://c.example/h", "secret": {"file": "/run/secrets/../../etc/shadow"}}
    ]}));
    let pointers: Vec<String> = borrowing
        .scope_problems("certifai")
        .into_iter()
        .map(|(pointer, _)| pointer)
        .collect();
    assert_eq!(
        pointers,
        [
            "/provisioning/steps/0/cluster/env",
            "/provisioning/steps/1/secret/file"
        ]
    );
    let own = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "PRODUCT_DATABASE_CERTIFAI_EU"}},
        {"kind": "hook", "url": "https://c.example/h", "secret": {"file": "/run/secrets/certifai/hook"}}
    ]}));
    assert!(own.scope_problems("certifai-eu").is_empty());
}

#[test]
fn rejects_another_products_variable_whose_name_ends_in_this_products_id() {
    let borrowing = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"env": "PRODUCT_DATABASE_BILLING_SYNC"}},
        {"kind": "hook", "url": "https://c.example/h", "secret": {"env": "PRODUCT_HOOK_SECRET_BILLING_SYNC"}}
    ]}));
    assert_eq!(borrowing.scope_problems("sync").len(), 2);
    assert!(borrowing.scope_problems("billing-sync").is_empty());
    let hook_of_b = plan(json!({"steps": [
        {"kind": "hook", "url": "https://c.example/h", "secret": {"env": "PRODUCT_HOOK_SECRET_B"}}
    ]}));
    assert_eq!(hook_of_b.scope_problems("secret-b").len(), 1);
}

#[test]
fn rejects_a_file_reference_to_the_processs_own_state() {
    for path in ["/proc/self/environ", "/sys/kernel/x", "/dev/mem", "/proc"] {
        let reading = plan(json!({"steps": [
            {"kind": "database", "isolation": "schema", "cluster": {"file": path}}
        ]}));
        assert_eq!(reading.scope_problems("certifai").len(), 1, "{path}");
    }
    let mounted = plan(json!({"steps": [
        {"kind": "database", "isolation": "schema", "cluster": {"file": "/procedures/db-url"}}
    ]}));
    assert!(mounted.scope_problems("certifai").is_empty());
}
