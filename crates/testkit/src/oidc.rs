//! A real OIDC issuer on loopback for tests: a discovery document and a JWKS with an ES256
//! key pair made in the test and an RS256 key from the fixtures (ring cannot generate RSA
//! keys; this one exists only for tests), and tokens signed with either. It records every
//! request for its discovery document and can be told to fail them. Its ES256 keys rotate
//! as a real issuer's do: a new key is added and signs from then on, an old one is retired
//! from the JWKS later.

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
#[derive(Debug, Clone)]
pub struct DiscoveryFetch {
    /// When it arrived.
    pub started: Instant,
    /// When it was answered.
    pub ended: Instant,
    /// Its `traceparent` header, if it sent one.
    pub traceparent: Option<String>,
}

#[derive(Default)]
struct DiscoveryLog {
    failing: AtomicBool,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    fetches: Mutex<Vec<DiscoveryFetch>>,
}

impl DiscoveryLog {
    async fn serve(&self, document: Value, traceparent: Option<String>) -> Response {
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
                traceparent,
            });
        response
    }
}

/// A new ES256 key pair: its kid, its signing key and its public JWK.
fn es256_key() -> (String, EncodingKey, Value) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .expect("an ES256 key pair");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("the key pair parses");
    // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
    let point = pair.public_key().as_ref();
    let kid = format!("test-{}", uuid::Uuid::new_v4().simple());
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    (kid, EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

/// An issuer serving its discovery document and keys until dropped.
pub struct TestIssuer {
    /// The issuer URL (`http://127.0.0.1:<port>/realms/test`).
    pub url: String,
    /// The ES256 keys by kid, the current signing key's kid first.
    keys: Mutex<Vec<(String, EncodingKey)>>,
    /// The JWKS served.
    jwks: Arc<Mutex<Value>>,
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
        let (kid, key, jwk) = es256_key();
        let jwks = Arc::new(Mutex::new(json!({"keys": [jwk, {
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": RSA_KID,
            "n": include_str!("../fixtures/rs256-test-key.n"), "e": "AQAB",
        }]})));
        let served_keys = Arc::clone(&jwks);
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
                get(move |headers: axum::http::HeaderMap| {
                    let served = Arc::clone(&served);
                    let discovery = discovery.clone();
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    async move { served.serve(discovery, traceparent).await }
                }),
            )
            .route(
                "/realms/test/protocol/openid-connect/certs",
                get(move || {
                    let keys = served_keys.lock().expect("the JWKS").clone();
                    async move { Json(keys) }
                }),
            );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            keys: Mutex::new(vec![(kid, key)]),
            jwks,
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
            key_refresh_interval: auth::oidc::REFRESH_INTERVAL,
            key_set_max_age: auth::oidc::KEY_SET_MAX_AGE,
        }
    }

    /// A signed token: valid `iss`, `aud`, `exp`, `nbf` and `sub`, overridden and extended by
    /// `claims`, signed with the current key.
    pub fn token(&self, claims: Value) -> String {
        let kid = self.current_kid();
        self.token_signed_by(&kid, claims)
    }

    /// The current signing key's kid.
    pub fn current_kid(&self) -> String {
        self.keys.lock().expect("the keys")[0].0.clone()
    }

    /// Like [`TestIssuer::token`], signed with key `kid` (current or not).
    ///
    /// # Panics
    /// When the issuer never had that key.
    pub fn token_signed_by(&self, kid: &str, claims: Value) -> String {
        let keys = self.keys.lock().expect("the keys");
        let (_, key) = keys
            .iter()
            .find(|(known, _)| known == kid)
            .expect("a key this issuer made");
        self.sign(Algorithm::ES256, kid, key, claims)
    }

    /// Adds a new ES256 key to the JWKS and signs with it from now on; answers its kid.
    pub fn rotate(&self) -> String {
        let (kid, key, jwk) = es256_key();
        self.jwks.lock().expect("the JWKS")["keys"]
            .as_array_mut()
            .expect("a key list")
            .push(jwk);
        self.keys
            .lock()
            .expect("the keys")
            .insert(0, (kid.clone(), key));
        kid
    }

    /// Takes key `kid` out of the JWKS (tokens it signed can no longer be checked).
    pub fn retire(&self, kid: &str) {
        self.jwks.lock().expect("the JWKS")["keys"]
            .as_array_mut()
            .expect("a key list")
            .retain(|jwk| jwk["kid"] != kid);
    }

    /// Like [`TestIssuer::token`], signed RS256 with the fixture RSA key.
    pub fn rs256_token(&self, claims: Value) -> String {
        self.sign(Algorithm::RS256, RSA_KID, &self.rsa_key, claims)
    }

    /// Like [`TestIssuer::token`], signed with the current key but naming key `kid` in the
    /// header.
    pub fn token_with_kid(&self, kid: &str, claims: Value) -> String {
        let keys = self.keys.lock().expect("the keys");
        self.sign(Algorithm::ES256, kid, &keys[0].1, claims)
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
