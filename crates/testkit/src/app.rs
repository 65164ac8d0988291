//! The whole service in-process over a test database, with typed request helpers and
//! principals made to order.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use auth::{Principal, PrincipalKind};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use domain::{Scope, Slug};
use http_body_util::BodyExt;
use registry::Actor;
use registry::api_keys::CreateKey;
use tower::ServiceExt;
use uuid::Uuid;

use crate::TestDb;

/// The service over its own database.
pub struct TestApp {
    /// The database the service uses.
    pub db: TestDb,
    /// The assembled service (router, state, cache listener).
    pub app: api::Application,
    next_ip: AtomicU32,
}

/// A response, read whole (frame by frame).
#[derive(Debug)]
pub struct TestResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
    /// The size of each data frame of the body, in the order they arrived: a body the
    /// server streams arrives in several.
    pub frames: Vec<usize>,
    /// The trailers sent after the body, if any.
    pub trailers: HeaderMap,
}

impl TestResponse {
    /// The body as JSON (panics, naming the body, when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The JSON pointers of a problem's `errors`, in order (empty when there are none).
    pub fn pointers(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|error| error["pointer"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A request being built.
pub struct TestRequest<'a> {
    app: &'a TestApp,
    router: axum::Router,
    builder: axum::http::request::Builder,
    body: Body,
    ip: Option<IpAddr>,
}

impl TestRequest<'_> {
    /// Adds `Authorization: Bearer <credential>`.
    pub fn bearer(mut self, credential: &str) -> Self {
        self.builder = self
            .builder
            .header(header::AUTHORIZATION, format!("Bearer {credential}"));
        self
    }

    /// Adds any header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(value.to_string());
        self
    }

    /// A raw body with the given content type.
    pub fn raw(mut self, content_type: &str, body: impl Into<Body>) -> Self {
        self.builder = self.builder.header(header::CONTENT_TYPE, content_type);
        self.body = body.into();
        self
    }

    /// Sends from this address (by default each request comes from an address of its own,
    /// so the failure brake of one test case does not trip another).
    pub fn from_ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sends it through the whole router.
    pub async fn send(self) -> TestResponse {
        let ip = self.ip.unwrap_or_else(|| {
            let n = self.app.next_ip.fetch_add(1, Ordering::Relaxed);
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)))
        });
        let mut request = self.builder.body(self.body).expect("a valid request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
        let response = self
            .router
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let mut stream = response.into_body();
        let mut body = Vec::new();
        let mut frames = Vec::new();
        let mut trailers = HeaderMap::new();
        while let Some(frame) = stream.frame().await {
            match frame.expect("the body is readable").into_data() {
                Ok(data) => {
                    frames.push(data.len());
                    body.extend_from_slice(&data);
                }
                Err(frame) => {
                    if let Ok(sent) = frame.into_trailers() {
                        trailers.extend(sent);
                    }
                }
            }
        }
        TestResponse {
            status,
            headers,
            body,
            frames,
            trailers,
        }
    }
}

/// Development settings with a fresh random key ring. Outbound fetches may use plain http
/// and reach private addresses, since the tests' servers (IdPs, metadata) are on loopback;
/// a test of the refusals sets `outbound` to the strict policy.
pub fn settings() -> api::Settings {
    let spec = keyring::Keyring::generate_spec("test").expect("a random key");
    api::Settings {
        outbound: egress::Egress::new(egress::Policy::DEVELOPMENT).expect("an outbound client"),
        ..api::Settings::with_keyring(keyring::Keyring::parse(&spec).expect("a key ring"))
            .expect("settings")
    }
}

fn platform_admin() -> Principal {
    Principal {
        kind: PrincipalKind::PlatformKey,
        tenant_id: None,
        scopes: [Scope::PlatformAdmin].into_iter().collect(),
        key_id: None,
        subject: Some("testkit".to_owned()),
        product: None,
        expires_at: None,
        previous_secret: false,
    }
}

impl TestApp {
    /// The service with default settings over a fresh database.
    pub async fn new() -> Self {
        Self::with_settings(settings()).await
    }

    /// The service with `settings` over a fresh database.
    pub async fn with_settings(settings: api::Settings) -> Self {
        let db = TestDb::migrated().await;
        let app = api::build(db.pool().clone(), settings)
            .await
            .expect("the application builds");
        Self {
            db,
            app,
            next_ip: AtomicU32::new(1),
        }
    }

    /// Another replica of the service over the same database: its own pool, key cache and
    /// change listener, as a second server process would have.
    pub async fn replica(&self) -> api::Application {
        let pool = storage::connect(self.db.url(), &storage::PoolConfig::default())
            .await
            .expect("a second pool");
        api::build(pool, settings())
            .await
            .expect("the replica builds")
    }

    /// Starts a request.
    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        self.request_on(&self.app, method, path)
    }

    /// Starts a request to the admin listener's router (probes and metrics).
    pub fn admin_request(&self, method: Method, path: &str) -> TestRequest<'_> {
        self.request_to(self.app.admin_router.clone(), method, path)
    }

    /// Starts a request to `replica` (another instance over the same database).
    pub fn request_on(
        &self,
        replica: &api::Application,
        method: Method,
        path: &str,
    ) -> TestRequest<'_> {
        self.request_to(replica.router.clone(), method, path)
    }

    fn request_to(&self, router: axum::Router, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest {
            app: self,
            router,
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
            ip: None,
        }
    }

    /// A tenant with `slug`; returns its id.
    pub async fn tenant(&self, slug: &str) -> Uuid {
        let slug = Slug::parse(slug).expect("a valid test slug");
        let mut conn = self.db.pool().acquire().await.expect("a connection");
        let tenant = storage::tenants::NewTenant::minimal(slug.clone(), slug.as_str(), "free");
        storage::tenants::insert(&mut conn, &tenant)
            .await
            .expect("the tenant is inserted")
            .id
    }

    /// Publishes product `id` in the catalog with a minimal manifest (a name, nothing else).
    pub async fn product(&self, id: &str) {
        let mut conn = self.db.pool().acquire().await.expect("a connection");
        storage::products::upsert(&mut conn, id, &serde_json::json!({"name": id}))
            .await
            .expect("the product is published");
    }

    /// A key for `tenant_id` (or a platform key) with `scopes`; returns its id and secret.
    pub async fn key(&self, tenant_id: Option<Uuid>, scopes: &[Scope]) -> (Uuid, String) {
        self.key_expiring(tenant_id, scopes, None).await
    }

    /// Like [`TestApp::key`], with an expiry.
    pub async fn key_expiring(
        &self,
        tenant_id: Option<Uuid>,
        scopes: &[Scope],
        expires_at: Option<DateTime<Utc>>,
    ) -> (Uuid, String) {
        self.create_key(tenant_id, scopes, expires_at, None).await
    }

    /// Like [`TestApp::key`], for a key that belongs to `product` (published first).
    pub async fn product_key(
        &self,
        tenant_id: Option<Uuid>,
        scopes: &[Scope],
        product: &str,
    ) -> (Uuid, String) {
        self.product(product).await;
        self.create_key(tenant_id, scopes, None, Some(product.to_owned()))
            .await
    }

    async fn create_key(
        &self,
        tenant_id: Option<Uuid>,
        scopes: &[Scope],
        expires_at: Option<DateTime<Utc>>,
        product: Option<String>,
    ) -> (Uuid, String) {
        let admin = platform_admin();
        let issued = registry::api_keys::create(
            self.db.pool(),
            &Actor {
                principal: &admin,
                source_ip: None,
            },
            "test",
            CreateKey {
                name: "test key".to_owned(),
                tenant_id,
                scopes: scopes.iter().copied().collect(),
                expires_at,
                product,
            },
        )
        .await
        .expect("the key is created");
        (issued.record.id, auth::keys::reveal(&issued.key).to_owned())
    }

    /// Like [`TestApp::key`], but inserted directly with a hash of about a millisecond's
    /// argon2 work instead of tens (verification takes the cost from the stored hash): for
    /// tests that need hundreds of keys. Records no audit event.
    pub async fn cheap_key(&self, tenant_id: Option<Uuid>, scopes: &[Scope]) -> (Uuid, String) {
        let prefix = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        let key = format!("tr_dev_{prefix}_{secret}");
        let salt = SaltString::encode_b64(Uuid::new_v4().as_bytes()).expect("a salt");
        let params = Params::new(1024, 1, 1, None).expect("valid argon2 parameters");
        let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(key.as_bytes(), &salt)
            .expect("the key hashes")
            .to_string();
        let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        let mut conn = self.db.pool().acquire().await.expect("a connection");
        let record = storage::api_keys::insert(
            &mut conn,
            &storage::api_keys::NewApiKey {
                tenant_id,
                name: "cheap test key",
                prefix: &prefix,
                hash: &hash,
                scopes: &scopes,
                expires_at: None,
                product: None,
            },
        )
        .await
        .expect("the key is inserted");
        (record.id, key)
    }

    /// A platform admin key's secret.
    pub async fn admin_key(&self) -> String {
        self.key(None, &[Scope::PlatformAdmin]).await.1
    }

    /// Runs `sql` (with `id` as `$1`) with triggers off, so no change is announced: what a
    /// replica answers afterwards shows whether it still serves from its caches.
    pub async fn change_silently(&self, sql: &str, id: Uuid) {
        let mut transaction = storage::begin(self.db.pool()).await.expect("a transaction");
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *transaction)
            .await
            .expect("triggers off");
        sqlx::query(sql)
            .bind(id)
            .execute(&mut *transaction)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        storage::commit(transaction).await.expect("committed");
    }

    /// Stores `count` audit events of `tenant` straight in the table (no chain), one second
    /// apart, newest last, described `event 1`… and reported by product `bulk`.
    pub async fn seed_audit_events(&self, tenant: Uuid, action: &str, count: i32) {
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, group_id, product, action, crud, description, created_at)
             SELECT $1, $1::text, 'bulk', $2, 'r', 'event ' || n, now() - (($3 - n) * interval '1 second')
             FROM generate_series(1, $3) AS n",
        )
        .bind(tenant)
        .bind(action)
        .bind(count)
        .execute(self.db.pool())
        .await
        .expect("seeded");
    }

    /// Returns once a request has claimed idempotency key `key` (its record exists).
    pub async fn claimed_idempotency_key(&self, key: &str) {
        loop {
            let found: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM idempotency_records WHERE key = $1)",
            )
            .bind(key)
            .fetch_one(self.db.pool())
            .await
            .expect("a lookup");
            if found {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Returns once at least `count` sessions of this database wait for a lock.
    pub async fn until_waiting_on_a_lock(&self, count: i64) {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(self.db.pool())
            .await
            .expect("the sessions are listed");
            if waiting >= count {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Revokes a key directly (no HTTP, no cache involved).
    pub async fn revoke(&self, id: Uuid) {
        let admin = platform_admin();
        registry::api_keys::revoke(
            self.db.pool(),
            &Actor {
                principal: &admin,
                source_ip: None,
            },
            id,
        )
        .await
        .expect("the key is revoked");
    }
}
