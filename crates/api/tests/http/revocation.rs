//! Revocation is exact: a revoked key, an archived or purged tenant's keys and a changed
//! entitlement stop counting on every replica within a second, even when a verification was
//! in flight as the change committed; and a change forgets only what it names, so one tenant
//! churning its own keys costs no other tenant its cached answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use domain::Scope;
use serde_json::{Value, json};
use testkit::{PROPAGATION_BOUND, TestApp, within_a_second};
use uuid::Uuid;

/// Revocations raced against use of the same keys on two replicas.
const REVOCATIONS: usize = 1_000;
/// Keys revoked by one commit; their verifications queue for the few argon2 permits, so many
/// have read the key before the commit and store their result after it is heard.
const KEYS_PER_COMMIT: usize = 50;

const ACCEPTED: [StatusCode; 2] = [StatusCode::OK; 2];
const REFUSED: [StatusCode; 2] = [StatusCode::UNAUTHORIZED; 2];

/// One database served by two replicas, and a platform admin key.
struct Fleet {
    app: TestApp,
    replica: api::Application,
    admin: String,
}

impl Fleet {
    async fn new() -> Self {
        let app = TestApp::new().await;
        let replica = app.replica().await;
        let admin = app.admin_key().await;
        Self {
            app,
            replica,
            admin,
        }
    }

    fn servers(&self) -> [&api::Application; 2] {
        [&self.app.app, &self.replica]
    }

    async fn me(&self, server: &api::Application, key: &str) -> StatusCode {
        self.app
            .request_on(server, Method::GET, "/v1/me")
            .bearer(key)
            .send()
            .await
            .status
    }

    /// How each replica answers `GET /v1/me` with `key`.
    async fn me_on_both(&self, key: &str) -> [StatusCode; 2] {
        let [first, second] = self.servers();
        [self.me(first, key).await, self.me(second, key).await]
    }

    /// Sends an admin request with an optional JSON body; answers its response.
    async fn admin(
        &self,
        server: &api::Application,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> testkit::TestResponse {
        let request = self
            .app
            .request_on(server, method, path)
            .bearer(&self.admin);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
    }

    /// A tenant with a key that both replicas have verified and cached.
    async fn tenant_with_cached_key(&self) -> (Uuid, Uuid, String) {
        let tenant = self.app.tenant("leaving").await;
        let (id, key) = self
            .app
            .cheap_key(Some(tenant), &[Scope::TenantsRead])
            .await;
        assert_eq!(self.me_on_both(&key).await, ACCEPTED);
        (tenant, id, key)
    }
}

/// When a request using a key was sent and when it was answered.
struct Use {
    started: Instant,
    ended: Instant,
}

/// What one commit showed: when it was sent and when it had surely happened, and when the
/// uses of its keys were sent and answered.
struct Batch {
    commit_sent: Instant,
    committed: Instant,
    uses: Vec<Use>,
}

/// Revokes `keys` in one transaction that commits while the keys are being verified on both
/// replicas, each key first used there now (the commit waits a different few milliseconds
/// in each batch, to land at different points of the verifications).
async fn race(fleet: &Fleet, round: u64, keys: &[(Uuid, String)]) -> Batch {
    let mut revocation = storage::begin(fleet.app.db.pool())
        .await
        .expect("a transaction");
    for (id, _) in keys {
        storage::api_keys::revoke(&mut revocation, *id)
            .await
            .expect("revoked, not yet committed");
    }
    let uses = futures::future::join_all(keys.iter().flat_map(|(_, key)| {
        fleet.servers().map(|server| async move {
            let started = Instant::now();
            fleet.me(server, key).await;
            Use {
                started,
                ended: Instant::now(),
            }
        })
    }));
    let commit = async {
        tokio::time::sleep(Duration::from_millis(round % 5 * 5)).await;
        let commit_sent = Instant::now();
        storage::commit(revocation).await.expect("committed");
        (commit_sent, Instant::now())
    };
    let (uses, (commit_sent, committed)) = tokio::join!(uses, commit);
    Batch {
        commit_sent,
        committed,
        uses,
    }
}

/// Asks both replicas about every key of a batch once a second has passed since its commit;
/// answers the keys still accepted.
async fn probe_a_second_after_commit(
    fleet: Arc<Fleet>,
    committed: Instant,
    keys: Vec<(Uuid, String)>,
) -> Vec<Uuid> {
    tokio::time::sleep_until((committed + PROPAGATION_BOUND).into()).await;
    let probes = keys
        .iter()
        .map(|(id, key)| async { (*id, fleet.me_on_both(key).await) });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|(_, statuses)| statuses.contains(&StatusCode::OK))
        .map(|(id, _)| id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_is_accepted_a_second_after_its_revocation_even_with_verifications_in_flight() {
    let fleet = Arc::new(Fleet::new().await);
    let tenant = fleet.app.tenant("racer").await;
    let mut keys = Vec::with_capacity(REVOCATIONS);
    for _ in 0..REVOCATIONS {
        keys.push(
            fleet
                .app
                .cheap_key(Some(tenant), &[Scope::TenantsRead])
                .await,
        );
    }

    // Each batch is probed at its own commit + 1 s, while later batches are still racing.
    let mut probes = tokio::task::JoinSet::new();
    let mut raced = 0;
    for (round, chunk) in (0..).zip(keys.chunks(KEYS_PER_COMMIT)) {
        let batch = race(&fleet, round, chunk).await;
        raced += batch
            .uses
            .iter()
            .filter(|used| used.started < batch.commit_sent && used.ended > batch.committed)
            .count();
        probes.spawn(probe_a_second_after_commit(
            Arc::clone(&fleet),
            batch.committed,
            chunk.to_vec(),
        ));
    }
    let late: Vec<Uuid> = probes.join_all().await.into_iter().flatten().collect();

    assert!(
        late.is_empty(),
        "{} of {REVOCATIONS} keys were still accepted a second after their revocation \
         committed ({raced} uses were in flight across their key's revocation): {late:?}",
        late.len()
    );
    assert!(
        raced >= REVOCATIONS / 10,
        "only {raced} uses were in flight across their key's revocation: the race was hardly run"
    );
}

#[tokio::test]
async fn a_listener_reconnect_forgets_every_cached_key_and_entitlement() {
    let fleet = Fleet::new().await;
    let (app, servers) = (&fleet.app, fleet.servers());
    let put = fleet
        .admin(
            servers[0],
            Method::PUT,
            "/v1/products/certifai",
            Some(manifest("Certifai")),
        )
        .await;
    assert!(put.status.is_success(), "{put:?}");
    let (tenant, marker_id, marker) = fleet.tenant_with_cached_key().await;
    let subscription = format!("/v1/tenants/{tenant}/products/certifai");
    let sso = json!({"feature_overrides": {"sso": true}});
    let subscribed = fleet
        .admin(servers[0], Method::PUT, &subscription, Some(sso))
        .await;
    assert!(subscribed.status.is_success(), "{subscribed:?}");
    // Notifications arrive in commit order: once a later revocation is heard everywhere, the
    // subscription's is too, and what is cached from here on stays until something is heard.
    app.revoke(marker_id).await;
    within_a_second("a later revocation heard on both replicas", async || {
        fleet.me_on_both(&marker).await == REFUSED
    })
    .await;
    let (key_id, key) = app.cheap_key(Some(tenant), &[Scope::TenantsRead]).await;
    assert_eq!(fleet.me_on_both(&key).await, ACCEPTED);
    let check = async |server| {
        let path = format!("/v1/tenants/{tenant}/entitlements/certifai/sso");
        fleet.admin(server, Method::GET, &path, None).await.json()["allowed"].clone()
    };
    for server in servers {
        assert_eq!(check(server).await, json!(true));
    }
    app.change_silently(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        key_id,
    )
    .await;
    app.change_silently(
        "UPDATE tenant_products SET enabled = false WHERE tenant_id = $1",
        tenant,
    )
    .await;
    assert_eq!(fleet.me_on_both(&key).await, ACCEPTED, "still cached");
    for server in servers {
        assert_eq!(check(server).await, json!(true), "still cached");
    }

    let listeners: Vec<i32> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("listeners terminated");
    assert!(listeners.len() >= 2, "both replicas listen: {listeners:?}");
    within_a_second(
        "both replicas reading keys and entitlements again after their listeners reconnected",
        async || {
            fleet.me_on_both(&key).await == REFUSED
                && check(servers[0]).await == json!(false)
                && check(servers[1]).await == json!(false)
        },
    )
    .await;
}

fn manifest(name: &str) -> Value {
    json!({
        "name": name, "supports_projects": false,
        "config_schema": {"type": "object"}, "default_config": {},
        "features": {"sso": {"type": "bool"}},
        "plans": {"free": {"sso": false}}
    })
}

#[tokio::test]
async fn a_tenant_churning_its_own_keys_and_products_leaves_a_bystanders_cached_answers_alone() {
    let fleet = Fleet::new().await;
    let (app, servers) = (&fleet.app, fleet.servers());
    let put = async |server, path: &str, body: Value| {
        let response = fleet.admin(server, Method::PUT, path, Some(body)).await;
        assert!(response.status.is_success(), "PUT {path}: {:?}", response);
    };
    let check = async |server, tenant: Uuid| {
        let path = format!("/v1/tenants/{tenant}/entitlements/certifai/sso");
        let response = fleet.admin(server, Method::GET, &path, None).await;
        response.json()["allowed"].clone()
    };
    let subscription = |tenant: Uuid| format!("/v1/tenants/{tenant}/products/certifai");
    put(servers[0], "/v1/products/certifai", manifest("Certifai")).await;
    let attacker = app.tenant("attacker").await;
    let bystander = app.tenant("bystander").await;
    let sso = json!({"feature_overrides": {"sso": true}});
    put(servers[0], &subscription(bystander), sso).await;
    let manager_scopes = [Scope::ApiKeysManage, Scope::TenantsRead];
    let (_, manager) = app.cheap_key(Some(attacker), &manager_scopes).await;
    let (bystander_key_id, bystander_key) =
        app.cheap_key(Some(bystander), &[Scope::TenantsRead]).await;
    assert_eq!(fleet.me_on_both(&bystander_key).await, ACCEPTED);
    for server in servers {
        assert_eq!(check(server, bystander).await, json!(true));
    }
    // Behind the caches' backs: any replica that reads the bystander again now refuses its
    // key and denies it the feature.
    app.change_silently(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        bystander_key_id,
    )
    .await;
    app.change_silently(
        "UPDATE tenant_products SET enabled = false WHERE tenant_id = $1",
        bystander,
    )
    .await;

    let mut last_revoked = String::new();
    for round in 0..20 {
        let server = servers[round % 2];
        put(server, "/v1/products/other", manifest("Other")).await;
        let toggle = json!({"feature_overrides": {"sso": round % 2 == 0}});
        put(server, &subscription(attacker), toggle).await;
        let (id, key) = app.cheap_key(Some(attacker), &[Scope::TenantsRead]).await;
        assert_eq!(fleet.me_on_both(&key).await, ACCEPTED);
        let revoked = app
            .request_on(server, Method::POST, &format!("/v1/api-keys/{id}/revoke"))
            .bearer(&manager)
            .send()
            .await;
        assert_eq!(revoked.status, StatusCode::OK);
        last_revoked = key;
    }
    // Notifications arrive in commit order: once the last revocation is heard everywhere, so
    // is everything before it.
    within_a_second(
        "the attacker's last key refused on both replicas",
        async || fleet.me_on_both(&last_revoked).await == REFUSED,
    )
    .await;
    assert_eq!(
        fleet.me_on_both(&bystander_key).await,
        ACCEPTED,
        "the bystander's key was verified again"
    );
    for server in servers {
        assert_eq!(
            check(server, bystander).await,
            json!(true),
            "the bystander's entitlement was read again"
        );
    }

    // The same caches forget the bystander as soon as a change names it.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
        .bind(bystander_key_id)
        .execute(app.db.pool())
        .await
        .expect("revoked, announced");
    sqlx::query("UPDATE tenant_products SET enabled = false WHERE tenant_id = $1")
        .bind(bystander)
        .execute(app.db.pool())
        .await
        .expect("disabled, announced");
    within_a_second(
        "the bystander's change heard on both replicas",
        async || {
            fleet.me_on_both(&bystander_key).await == REFUSED
                && check(servers[0], bystander).await == json!(false)
                && check(servers[1], bystander).await == json!(false)
        },
    )
    .await;
}

#[tokio::test]
async fn archiving_a_tenant_ends_its_keys_on_every_replica_for_good() {
    let fleet = Fleet::new().await;
    let (tenant, _, key) = fleet.tenant_with_cached_key().await;
    let path = format!("/v1/tenants/{tenant}");

    let archived = fleet
        .admin(&fleet.app.app, Method::DELETE, &path, None)
        .await;
    assert_eq!(archived.status, StatusCode::OK);
    within_a_second(
        "the archived tenant's key refused on both replicas",
        async || fleet.me_on_both(&key).await == REFUSED,
    )
    .await;
    let refusal = fleet
        .app
        .request_on(&fleet.replica, Method::GET, "/v1/me")
        .bearer(&key)
        .send()
        .await
        .json();
    assert_eq!(refusal["detail"], "the API key was revoked");

    let restore = json!({"to": "frozen", "reason": "restored"});
    let transitions = format!("{path}/transitions");
    let restored = fleet
        .admin(&fleet.replica, Method::POST, &transitions, Some(restore))
        .await;
    assert_eq!(restored.status, StatusCode::OK);
    assert_eq!(
        fleet.me_on_both(&key).await,
        REFUSED,
        "a restore brings no key back"
    );
}

#[tokio::test]
async fn purging_a_tenant_ends_its_keys_on_every_replica_within_a_second() {
    let fleet = Fleet::new().await;
    let (tenant, _, key) = fleet.tenant_with_cached_key().await;
    // Archived without a word, so that only the purge itself can reach the replicas' caches.
    fleet
        .app
        .change_silently(
            "UPDATE tenants SET status = 'archived' WHERE id = $1",
            tenant,
        )
        .await;
    assert_eq!(fleet.me_on_both(&key).await, ACCEPTED, "still cached");

    let path = format!("/v1/tenants/{tenant}?purge=true");
    let purged = fleet
        .admin(&fleet.app.app, Method::DELETE, &path, None)
        .await;
    assert_eq!(purged.status, StatusCode::ACCEPTED);
    assert_eq!(purged.json()["state"], "succeeded");
    within_a_second(
        "the purged tenant's key refused on both replicas",
        async || fleet.me_on_both(&key).await == REFUSED,
    )
    .await;
}

#[tokio::test]
async fn a_rotated_key_is_refused_on_every_replica_and_its_new_secret_accepted() {
    let fleet = Fleet::new().await;
    let (_, id, old) = fleet.tenant_with_cached_key().await;
    let path = format!("/v1/api-keys/{id}/rotate");
    let rotated = fleet.admin(&fleet.replica, Method::POST, &path, None).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new = rotated.json()["key"]
        .as_str()
        .expect("the new key")
        .to_owned();
    within_a_second("the old secret refused on both replicas", async || {
        fleet.me_on_both(&old).await == REFUSED
    })
    .await;
    assert_eq!(fleet.me_on_both(&new).await, ACCEPTED);
}

#[tokio::test]
async fn a_repeated_revocation_announces_nothing() {
    let app = TestApp::new().await;
    let (id, _) = app.cheap_key(None, &[Scope::TenantsRead]).await;
    app.revoke(id).await;
    let mut listener = storage::listen(app.db.pool(), &[storage::api_keys::CHANGES_CHANNEL])
        .await
        .expect("listening");
    app.revoke(id).await;
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(storage::api_keys::CHANGES_CHANNEL)
        .execute(app.db.pool())
        .await
        .expect("a marker");
    let first = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the marker arrives")
        .expect("a notification");
    assert_eq!(
        first.payload(),
        "marker",
        "the second revocation changed nothing"
    );
}
