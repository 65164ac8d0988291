//! `Idempotency-Key` on POST: the first response to a key is stored for 24 h and replayed to
//! the same principal for the same request; the same key with another request is a 422, and
//! a key whose first request is still running is a 409.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use storage::idempotency::{self, Claim};

use crate::AppState;
use crate::extract::authenticate;
use crate::middleware::BODY_LIMIT;
use crate::problem::ApiError;

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

/// The middleware; does nothing for other methods or requests without the header.
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
    let (parts, body) = request.into_parts();
    // Unauthenticated requests are answered by the handler's own 401; nothing to store.
    let Ok(principal) = authenticate(&parts, &state).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let principal = principal.actor_id();
    let Ok(bytes) = to_bytes(body, BODY_LIMIT).await else {
        return ApiError::payload_too_large().into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.uri.to_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex_digest(&hasher.finalize());
    match idempotency::claim(&state.pool, &principal, &key, &request_hash).await {
        Err(error) => ApiError::from(error).into_response(),
        Ok(Claim::Mismatch) => ApiError::invalid_field(
            "/",
            "this Idempotency-Key was used for a different request; use a new key",
        )
        .into_response(),
        Ok(Claim::InProgress) => ApiError::conflict(
            "a request with this Idempotency-Key is still in progress; retry later",
        )
        .into_response(),
        Ok(Claim::Replay {
            status,
            headers,
            body,
        }) => {
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
        Ok(Claim::Fresh) => {
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            store(&state, &principal, &key, response).await
        }
    }
}

async fn store(state: &AppState, principal: &str, key: &str, response: Response) -> Response {
    let status = response.status();
    if status.is_server_error() {
        if let Err(error) = idempotency::release(&state.pool, principal, key).await {
            tracing::warn!(%error, "could not release an idempotency key");
        }
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
    if let Err(error) = idempotency::complete(
        &state.pool,
        principal,
        key,
        status.as_u16(),
        &headers,
        &bytes,
    )
    .await
    {
        tracing::warn!(%error, "could not store an idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
