//! A real OIDC issuer on loopback for tests: a discovery document and a JWKS with an ES256
//! key pair made in the test and an RS256 key from the fixtures (ring cannot generate RSA
//! keys; this one exists only for tests), and tokens signed with either. It records every
//! request for its discovery document and can be told to fail them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// The audience test tokens carry by default (the server's default `OIDC_AUDIENCE`).
pub const AUDIENCE: &str = "tenant-registry";

/// The kid of the fixture RSA key.
const RSA_KID: &str = "test-rsa";

/// How long a failing discovery request takes, so that fetches a client fails to keep
/// apart would overlap here.
const FAILURE_DELAY: Duration = Duration::from_millis(20);

/// One request for the discovery document, as the issuer saw it.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryFetch {
    /// When it arrived.
    pub started: Instant,
    /// When it was answered.
    pub ended: Instant,
}

#[derive(Default)]
struct DiscoveryLog {
    failing: AtomicBool,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    fetches: Mutex<Vec<DiscoveryFetch>>,
}

impl DiscoveryLog {
    async fn serve(&self, document: Value) -> Response {
        let started = Instant::now();
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight
            .fetch_max(now_in_flight, Ordering::SeqCst);
        let response = if self.failing.load(Ordering::SeqCst) {
            tokio::time::sleep(FAILURE_DELAY).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            Json(document).into_response()
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.fetches
            .lock()
            .expect("the fetch log")
            .push(DiscoveryFetch {
                started,
                ended: Instant::now(),
            });
        response
    }
}

/// An issuer serving its discovery document and keys until dropped.
pub struct TestIssuer {
    /// The issuer URL (`http://127.0.0.1:<port>/realms/test`).
    pub url: String,
    kid: String,
    key: EncodingKey,
    rsa_key: EncodingKey,
    discovery: Arc<DiscoveryLog>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestIssuer {
    /// Generates a key pair and starts serving on a free loopback port.
    pub async fn start() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("an ES256 key pair");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the key pair parses");
        // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let kid = format!("test-{}", uuid::Uuid::new_v4().simple());
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }, {
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": RSA_KID,
            "n": include_str!("../fixtures/rs256-test-key.n"), "e": "AQAB",
        }]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address: SocketAddr = listener.local_addr().expect("the bound address");
        let url = format!("http://{address}/realms/test");
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("http://{address}/realms/test/protocol/openid-connect/certs"),
        });
        let log = Arc::new(DiscoveryLog::default());
        let served = Arc::clone(&log);
        let router = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(move || {
                    let served = Arc::clone(&served);
                    let discovery = discovery.clone();
                    async move { served.serve(discovery).await }
                }),
            )
            .route(
                "/realms/test/protocol/openid-connect/certs",
                get(move || async move { Json(jwks) }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            rsa_key: EncodingKey::from_rsa_pem(include_bytes!("../fixtures/rs256-test-key.pem"))
                .expect("the fixture RSA key parses"),
            discovery: log,
            server,
        }
    }

    /// While `failing`, the discovery document answers 503 (after a short delay).
    pub fn fail_discovery(&self, failing: bool) {
        self.discovery.failing.store(failing, Ordering::SeqCst);
    }

    /// Every request for the discovery document so far, in the order they were answered.
    pub fn discovery_fetches(&self) -> Vec<DiscoveryFetch> {
        self.discovery
            .fetches
            .lock()
            .expect("the fetch log")
            .clone()
    }

    /// The most discovery requests that were being answered at the same time.
    pub fn most_concurrent_discovery_fetches(&self) -> usize {
        self.discovery.most_in_flight.load(Ordering::SeqCst)
    }

    /// The server's OIDC settings for this issuer.
    pub fn config(&self) -> auth::OidcConfig {
        auth::OidcConfig {
            issuer: self.url.clone(),
            audience: AUDIENCE.to_owned(),
            admin_role: "platform-admin".to_owned(),
        }
    }

    /// A signed token: valid `iss`, `aud`, `exp`, `nbf` and `sub`, overridden and extended by
    /// `claims`.
    pub fn token(&self, claims: Value) -> String {
        self.token_with_kid(&self.kid.clone(), claims)
    }

    /// Like [`TestIssuer::token`], signed RS256 with the fixture RSA key.
    pub fn rs256_token(&self, claims: Value) -> String {
        self.sign(Algorithm::RS256, RSA_KID, &self.rsa_key, claims)
    }

    /// Like [`TestIssuer::token`], naming key `kid` in the header.
    pub fn token_with_kid(&self, kid: &str, claims: Value) -> String {
        self.sign(Algorithm::ES256, kid, &self.key, claims)
    }

    fn sign(&self, algorithm: Algorithm, kid: &str, key: &EncodingKey, claims: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut all = json!({
            "iss": self.url, "aud": AUDIENCE, "sub": "user-1",
            "iat": now, "nbf": now - 5, "exp": now + 300,
        });
        if let (Some(all), Value::Object(extra)) = (all.as_object_mut(), claims) {
            all.extend(extra);
        }
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &all, key).expect("the token signs")
    }
}
