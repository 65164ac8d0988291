//! `Idempotency-Key` on POST: the first response to a key is stored for 24 h and replayed to
//! the same principal for the same request, byte for byte (a refusal's problem details
//! included); the same key with another request is a 422, and a key whose first request is
//! still running is a 409 of its own type (`/problems/idempotency-in-progress`, with
//! `Retry-After`). A request that ends without an answer worth keeping (a 5xx, a 408 or 429,
//! or no answer at all: timed out, or its client gone) releases its key, so the client's
//! retry runs; when the database is away at that moment, the release is tried again in the
//! background until it returns. So is storing an answer worth keeping (the change it
//! reports is made): the key stays in progress until then, and replays it after. A claim
//! has an identity (a token its request made), so a release or an answer, however late,
//! settles only its own claim, never a retry's.
//!
//! The request's change marks its claim in the change's own transaction (`storage::commit`):
//! a claim so marked is never freed for a retry. A request killed between its commit and
//! storing its answer (SIGKILL, a crash), or whose answer after the commit was a failure,
//! leaves its key answering 409 `/problems/idempotency-answer-lost`: the change is made
//! once, and the client looks the result up instead of making it twice.
//!
//! A record belongs to its principal (kind, tenant, key id or OIDC subject), method and path:
//! another principal's identical key, or the same key on another path, is another record.
//! A claim names this process ([`storage::idempotency::Holder`]), so a retry reaching another
//! replica or a restarted server runs as soon as the process that claimed the key is gone.
//! Stored bodies are sealed with the key ring, bound to their record, since some carry a
//! secret (a new API key) or PII. Unauthenticated requests never reach the store, and the
//! request is authenticated once (the handler reuses the outcome). A background task sweeps
//! records older than 24 h in batches.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keyring::Keyring;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use sha2::{Digest, Sha256};
use storage::PgPool;
use storage::idempotency::{self, Claim, ClaimScope, RecordId};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::AppState;
use crate::extract;
use crate::middleware::BODY_LIMIT;
use crate::problem::{self, ApiError};

/// The request header naming the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a replayed response.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const REPLAYED_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

fn valid_key(key: &HeaderValue) -> Option<String> {
    let key = key.to_str().ok()?;
    (!key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| key.to_owned())
}

/// The associated data that binds a sealed body to its record: moved to another record
/// (another principal's, say), it does not open.
fn seal_context(id: &RecordId<'_>) -> String {
    let parts = [id.principal, id.method, id.path, id.key];
    format!(
        "idempotency_records.sealed_body:{}",
        serde_json::Value::from(parts.as_slice())
    )
}

/// The middleware; does nothing for other methods, requests without the header, or
/// requests that fail authentication (the handler answers those from the same outcome).
pub async fn idempotent_posts(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw_key) = request.headers().get(&IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    let Some(key) = valid_key(&raw_key) else {
        return ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        )
        .into_response();
    };
    let (mut parts, body) = request.into_parts();
    let Ok(caller) = extract::caller(&mut parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Some(owner) = caller.principal.owner_id() else {
        return ApiError::bad_request(
            "Idempotency-Key needs a credential that names its holder (a token with sub)",
        )
        .into_response();
    };
    let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
        return ApiError::payload_too_large().into_response();
    };
    let path = match canonical_path(parts.uri.path()) {
        Ok(path) => path,
        Err(refused) => return refused.into_response(),
    };
    let record = OwnedRecordId(Arc::new(state.claim_holder.in_flight(&RecordId {
        principal: &owner,
        method: parts.method.as_str(),
        path: &path,
        key: &key,
    })));
    let id = record.as_id();
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    if let Some(query) = parts.uri.query() {
        hasher.update(b"?");
        hasher.update(query.as_bytes());
    }
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());
    // The guard exists before the claim does, so no instant is left in which a dropped
    // request has a claim that nobody releases.
    let mut held = HeldClaim::new(state.pool.clone(), record.clone());
    match held.claim(request_hash).await {
        Err(error) => {
            // The claim may have committed before the error: releasing our token is harmless.
            held.release().await;
            ApiError::from(error).into_response()
        }
        Ok(Claim::Mismatch) => {
            held.settle();
            ApiError::invalid_field(
                "/",
                "this Idempotency-Key was used for a different request; use a new key",
            )
            .into_response()
        }
        Ok(Claim::InProgress) => {
            held.settle();
            ApiError::idempotency_in_progress().into_response()
        }
        Ok(Claim::AnswerLost) => {
            held.settle();
            ApiError::idempotency_answer_lost().into_response()
        }
        Ok(Claim::Replay {
            status,
            headers,
            sealed_body,
        }) => {
            held.settle();
            replay(&state.settings.keyring, &id, status, &headers, &sealed_body)
        }
        Ok(Claim::Fresh) => {
            let ids = problem::RequestIds::of(&parts.headers);
            let response = ClaimScope::new(&id, held.token)
                .run(next.run(Request::from_parts(parts, Body::from(bytes))))
                .await;
            let response = problem::render(response, id.path.to_owned(), ids);
            store(&state, held, response).await
        }
    }
}

/// `path` with every segment written the one way: percent-decoded (with the decoder that
/// checks every path, `hygiene::decode`, so it means what the handlers read), an id in any
/// form the handlers accept (upper case, braces, `urn:uuid:`, no hyphens) as a hyphenated
/// lower-case UUID, and any other segment with only `%` and `/` escaped again (so `a%2Fb`
/// stays one segment, and `%2541` stays apart from `A`). So the same request through another
/// spelling of a path is the same record, not a second run of the change.
fn canonical_path(path: &str) -> Result<String, ApiError> {
    let segments = path
        .split('/')
        .map(|segment| {
            let decoded = crate::hygiene::decode(segment).map_err(crate::hygiene::path_problem)?;
            Ok(match Uuid::try_parse(&decoded) {
                Ok(id) => id.to_string(),
                Err(_) => utf8_percent_encode(&decoded, ESCAPED_IN_A_SEGMENT).to_string(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(segments.join("/"))
}

/// What [`canonical_path`] escapes again in a decoded segment: what would change its meaning
/// as a path, and control characters, so the canonical path stays printable.
const ESCAPED_IN_A_SEGMENT: &AsciiSet = &CONTROLS.add(b'%').add(b'/');

/// A [`RecordId`] that owns its parts, so a claim can outlive the request's borrows; while
/// any clone lives (in the request, or in a background release or store), this process
/// works on the record.
#[derive(Clone)]
struct OwnedRecordId(Arc<idempotency::InFlight>);

impl OwnedRecordId {
    fn as_id(&self) -> RecordId<'_> {
        self.0.id()
    }
}

/// The claim of a request, from before it is made until its answer is stored. Unless
/// [`HeldClaim::settle`] says its response was stored, its key released or the claim not
/// its own, dropping it releases the claim: the request's future was dropped (the request
/// timed out, or its client went away) and nobody else would, leaving the key "in progress"
/// until the claim counts as abandoned. Releasing names the claim's token, so it is harmless
/// when the claim was never made, and never touches a retry's newer claim.
struct HeldClaim {
    pool: PgPool,
    record: Option<OwnedRecordId>,
    token: Uuid,
    /// The claim's transaction, in a task of its own so that it runs to its end even when
    /// the request is dropped meanwhile; a release waits for it, so it cannot overtake the
    /// claim's commit.
    claiming: Option<JoinHandle<Result<Claim, sqlx::Error>>>,
}

impl HeldClaim {
    fn new(pool: PgPool, record: OwnedRecordId) -> Self {
        Self {
            pool,
            record: Some(record),
            token: Uuid::new_v4(),
            claiming: None,
        }
    }

    /// Claims the record for the request digest `request_hash`, as this guard's token.
    async fn claim(&mut self, request_hash: String) -> Result<Claim, sqlx::Error> {
        let Some(record) = self.record.clone() else {
            return Err(sqlx::Error::Protocol(
                "a settled claim was claimed again".into(),
            ));
        };
        let (pool, token) = (self.pool.clone(), self.token);
        let claiming = self.claiming.insert(tokio::spawn(async move {
            idempotency::claim(&pool, &record.0, &request_hash, token).await
        }));
        let outcome = claiming.await;
        self.claiming = None;
        outcome.map_err(|_| sqlx::Error::Protocol("the idempotency claim's task failed".into()))?
    }

    fn id(&self) -> Option<RecordId<'_>> {
        self.record.as_ref().map(OwnedRecordId::as_id)
    }

    /// The claim is settled: stored, released, or not this request's to release.
    fn settle(mut self) {
        self.record = None;
    }

    /// The claim's record, which the caller now settles.
    fn into_record(mut self) -> Option<OwnedRecordId> {
        self.record.take()
    }

    /// Releases the key now; when the database cannot be reached, keeps trying in the
    /// background until it can (a claim never waits for its abandonment time just because
    /// the database was away when its request failed).
    async fn release(mut self) {
        if let Some(record) = self.record.take() {
            release_until_done(self.pool.clone(), record, self.token).await;
        }
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, token, claiming) = (self.pool.clone(), self.token, self.claiming.take());
        runtime.spawn(async move {
            if let Some(claiming) = claiming {
                // Whatever it answers, its transaction has ended once it does.
                let _ = claiming.await;
            }
            release_until_done(pool, record, token).await;
        });
    }
}

/// The first wait before a failed release or store is tried again; it doubles up to the
/// next bound.
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(100);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(1);

/// Releases `token`'s claim of `record`, trying again while the database is unreachable, in
/// the background after the first failure, until it works or the claim would count as
/// abandoned anyway. However late it runs, it removes only that claim.
async fn release_until_done(pool: PgPool, record: OwnedRecordId, token: Uuid) {
    match idempotency::release(&pool, &record.as_id(), token).await {
        Ok(()) => {}
        Err(error) if !storage::is_unavailable(&error) => {
            tracing::warn!(%error, "could not release an idempotency key");
        }
        Err(error) => {
            tracing::warn!(%error, "could not release an idempotency key yet; retrying in the background");
            retry_in_background("release an idempotency key", move || {
                let (pool, record) = (pool.clone(), record.clone());
                async move { idempotency::release(&pool, &record.as_id(), token).await }
            });
        }
    }
}

/// Runs `attempt` again, in the background, while it fails because the database is
/// unreachable, until it works or its claim would count as abandoned anyway.
fn retry_in_background<Attempt>(what: &'static str, attempt: impl Fn() -> Attempt + Send + 'static)
where
    Attempt: Future<Output = Result<(), sqlx::Error>> + Send,
{
    tokio::spawn(async move {
        let give_up = tokio::time::Instant::now()
            + Duration::from_secs_f64(idempotency::ABANDONED_AFTER_SECS);
        let mut wait = RELEASE_RETRY_FIRST;
        while tokio::time::Instant::now() < give_up {
            tokio::time::sleep(wait).await;
            match attempt().await {
                Ok(()) => return,
                Err(error) if storage::is_unavailable(&error) => {
                    wait = (wait * 2).min(RELEASE_RETRY_MAX);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not {what}");
                    return;
                }
            }
        }
    });
}

/// Whether a response is kept and replayed. A server failure (5xx, a busy 503 included),
/// a timeout (408) and the failure brake (429) say nothing about the request itself: their
/// key is released so that a retry runs.
fn is_kept(status: StatusCode) -> bool {
    !(status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS)
}

fn replay(
    keyring: &Keyring,
    id: &RecordId<'_>,
    status: u16,
    headers: &serde_json::Map<String, serde_json::Value>,
    sealed_body: &[u8],
) -> Response {
    let body = match keyring.open(&seal_context(id), sealed_body) {
        Ok(body) => body,
        Err(error) => return ApiError::internal(error).into_response(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (name, value) in headers {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::try_from(name.as_str()),
            value.as_str().map(HeaderValue::from_str),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

async fn store(state: &AppState, held: HeldClaim, response: Response) -> Response {
    let status = response.status();
    if !is_kept(status) {
        held.release().await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return ApiError::internal("could not read a response to store it").into_response();
    };
    let headers: serde_json::Map<String, serde_json::Value> = REPLAYED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), serde_json::Value::from(value)))
        })
        .collect();
    let Some(id) = held.id() else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    match state.settings.keyring.seal(&seal_context(&id), &bytes) {
        Ok(sealed) => {
            let stored = idempotency::complete(
                &state.pool,
                &id,
                held.token,
                status.as_u16(),
                &headers,
                &sealed,
            )
            .await;
            match stored {
                Ok(true) => held.settle(),
                Ok(false) => {
                    tracing::warn!(
                        "an idempotent response was not stored: its claim was abandoned and taken by a retry"
                    );
                    held.settle();
                }
                // The change is made and answered: its key must replay it, not run it again,
                // so the answer is stored once the database is back (a retry meanwhile
                // finds the key in progress).
                Err(error) if storage::is_unavailable(&error) => {
                    tracing::warn!(%error, "could not store an idempotent response yet; retrying in the background");
                    let token = held.token;
                    if let Some(record) = held.into_record() {
                        let pool = state.pool.clone();
                        retry_in_background("store an idempotent response", move || {
                            let (pool, record) = (pool.clone(), record.clone());
                            let (headers, sealed) = (headers.clone(), sealed.clone());
                            async move {
                                let id = record.as_id();
                                idempotency::complete(
                                    &pool,
                                    &id,
                                    token,
                                    status.as_u16(),
                                    &headers,
                                    &sealed,
                                )
                                .await
                                .map(drop)
                            }
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not store an idempotent response");
                    held.release().await;
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "could not seal an idempotent response; releasing its key");
            held.release().await;
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Deletes every record older than 24 h, a batch at a time; returns how many.
pub async fn sweep_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    storage::retention::in_batches(|| idempotency::prune_expired(pool, storage::retention::BATCH))
        .await
}

/// Runs [`sweep_expired`] now and every ten minutes until the runtime stops.
pub(crate) fn spawn_sweeper(pool: PgPool) -> tokio::task::JoinHandle<()> {
    storage::retention::spawn_every_ten_minutes("expired idempotency records", move || {
        let pool = pool.clone();
        async move { sweep_expired(&pool).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_id_in_a_path_is_the_same_record() {
        let canonical = "/v1/api-keys/6bb9a7ed-1eb5-4767-9317-42332157a74b/revoke";
        for spelling in [
            canonical,
            "/v1/api-keys/6BB9A7ED-1EB5-4767-9317-42332157A74B/revoke",
            "/v1/api-keys/6bb9a7ed1eb54767931742332157a74b/revoke",
            "/v1/api-keys/{6bb9a7ed-1eb5-4767-9317-42332157a74b}/revoke",
            "/v1/api-keys/urn:uuid:6bb9a7ed-1eb5-4767-9317-42332157a74b/revoke",
            "/v1/api-keys/%36bb9a7ed-1eb5-4767-9317-42332157a74b/revoke",
            "/v1/api-keys/%7B6bb9a7ed-1eb5-4767-9317-42332157a74b%7d/rev%6Fke",
        ] {
            assert_eq!(
                canonical_path(spelling).expect("a path"),
                canonical,
                "{spelling}"
            );
        }
        assert_eq!(
            canonical_path("/v1/tenants").expect("a path"),
            "/v1/tenants"
        );
        assert_eq!(
            canonical_path("/v1/tenants/Acme/x").expect("a path"),
            "/v1/tenants/Acme/x"
        );
    }

    #[test]
    fn percent_escapes_are_decoded_but_never_merge_segments_or_escapes() {
        let canonical = |path: &str| canonical_path(path).expect("a path");
        assert_eq!(
            canonical("/v1/tenants/%61cme"),
            canonical("/v1/tenants/acme")
        );
        assert_ne!(canonical("/v1/tenants/a%2Fb"), canonical("/v1/tenants/a/b"));
        assert_ne!(canonical("/v1/tenants/%2541"), canonical("/v1/tenants/A"));
        assert_eq!(
            canonical("/v1/tenants/%2541"),
            canonical("/v1/tenants/%2541")
        );
    }

    #[test]
    fn a_path_with_a_malformed_escape_a_nul_or_invalid_utf8_is_refused() {
        for refused in ["/v1/tenants/a%zz", "/v1/tenants/a%00", "/v1/tenants/%FF"] {
            let error = canonical_path(refused).expect_err(refused);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{refused}");
        }
    }
}
