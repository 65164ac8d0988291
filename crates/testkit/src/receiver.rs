//! A real webhook receiver on loopback for tests: it records every request it gets and
//! answers with the status it is told to (200 unless told otherwise), optionally after a
//! delay, so tests can play a receiver that is down, gone or slow.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `webhook-id` header.
    pub id: String,
    /// The `webhook-timestamp` header.
    pub timestamp: String,
    /// The `webhook-signature` header.
    pub signature: String,
    /// The raw body.
    pub body: Bytes,
}

impl Received {
    /// Whether one of the `webhook-signature` entries is the Standard Webhooks signature of
    /// this request under `secret` (`whsec_…`), computed here from the specification alone
    /// (an HMAC-SHA256 of `id.timestamp.body`), not by the code that signed it.
    ///
    /// # Panics
    /// When `secret` is not `whsec_` and base64.
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 key");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        self.signature
            .split(' ')
            .any(|entry| entry.strip_prefix("v1,") == Some(expected.as_str()))
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON: a delivery always is.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

struct Script {
    status: StatusCode,
    delay: Duration,
    /// Requests that arrived, answered or not.
    arrivals: usize,
    received: Vec<Received>,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<Script>>,
    arrived: Arc<Notify>,
}

/// A receiver listening on `127.0.0.1`; it stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (status, delay) = {
        let mut script = shared
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        script.arrivals += 1;
        (script.status, script.delay)
    };
    shared.arrived.notify_waiters();
    tokio::time::sleep(delay).await;
    shared
        .script
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .received
        .push(Received {
            id: header(&headers, "webhook-id"),
            timestamp: header(&headers, "webhook-timestamp"),
            signature: header(&headers, "webhook-signature"),
            body,
        });
    shared.arrived.notify_waiters();
    status
}

impl Receiver {
    /// Starts a receiver answering 200.
    ///
    /// # Panics
    /// When no loopback port can be had.
    pub async fn start() -> Self {
        let shared = Shared {
            script: Arc::new(Mutex::new(Script {
                status: StatusCode::OK,
                delay: Duration::ZERO,
                arrivals: 0,
                received: Vec::new(),
            })),
            arrived: Arc::new(Notify::new()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.ok();
        });
        Self {
            address,
            shared,
            server,
        }
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Answers every later request with `status`.
    pub fn answer(&self, status: u16) {
        self.script().status = StatusCode::from_u16(status).expect("a valid status");
    }

    /// Waits `delay` before answering every later request.
    pub fn delay(&self, delay: Duration) {
        self.script().delay = delay;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.script().received.clone()
    }

    /// Waits until at least `count` requests arrived, answered yet or not (at most
    /// `within`): a request held by [`Receiver::delay`] counts as soon as it arrives.
    ///
    /// # Panics
    /// When fewer arrived in time.
    pub async fn wait_for_arrivals(&self, count: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            if self.script().arrivals >= count {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "only {} of {count} requests arrived within {within:?}",
                self.script().arrivals
            );
        }
    }

    /// Waits until at least `count` requests arrived (at most `within`) and returns them all.
    ///
    /// # Panics
    /// When fewer arrived in time.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the receiver got {} of {count} expected requests within {within:?}",
                    self.received().len()
                );
            }
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.shared
            .script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
