//! The layers every request passes through, outermost first: request id (accepted or
//! generated, echoed back), a tracing span carrying it, problem+json for every error, the
//! refusal of a head over the registry's limits and of text PostgreSQL cannot store in the
//! path or query, CORS, panic capture, a timeout and the body size limit.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::{head_limits, hygiene, problem};

/// The request id header, accepted from the caller or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The longest request id accepted from a caller.
const MAX_REQUEST_ID: usize = 128;

/// A caller's request id is echoed in the answer, the problem and every log line: one
/// longer than [`MAX_REQUEST_ID`] or with characters beyond `[A-Za-z0-9._:-]` is replaced
/// by a generated one.
async fn drop_unusable_request_id(
    mut request: Request<axum::body::Body>,
) -> Request<axum::body::Body> {
    let unusable = request.headers().get(REQUEST_ID).is_some_and(|id| {
        id.len() > MAX_REQUEST_ID
            || !id
                .as_bytes()
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._:-".contains(byte))
    });
    if unusable {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Layer: answers 414 or 431 for a head over the registry's limits (`head_limits`), then 400
/// or 422 for text PostgreSQL cannot store in the path or query (`hygiene`), before routing.
/// One layer for both: each `from_fn` layer adds a future to every request's stack.
async fn screen(request: Request<axum::body::Body>, next: Next) -> Response {
    match head_limits::check(&request).and_then(|()| hygiene::check(request.uri())) {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
}

/// A request's span: its route template (the span's name in a trace, as OpenTelemetry's HTTP
/// conventions ask, so that every tenant's lookup is one operation), the request id, and the
/// trace it joins from the caller's `traceparent` (`trace_id` in every log line under it).
fn request_span(request: &Request<axum::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "request",
        method,
        path = %request.uri().path(),
        request_id,
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    // Named before joining its trace: the exported span is built then.
    if telemetry::exporting() {
        span.record("otel.name", format!("{method} {route}"));
    }
    if let Some(trace_id) = telemetry::join_remote_trace(&span, request.headers()) {
        span.record("trace_id", trace_id);
    }
    span
}

/// Wraps `router` in the service-wide layers.
pub fn apply(router: Router, cors_origins: &[HeaderValue], timeout: Duration) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(cors_origins.iter().cloned()))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            REQUEST_ID,
        ])
        .expose_headers([header::ETAG, header::LOCATION, REQUEST_ID]);
    let trace = TraceLayer::new_for_http()
        .make_span_with(request_span)
        .on_response(
            |response: &Response, _latency: Duration, span: &tracing::Span| {
                // Only an exported span needs them: recording formats the log's copy of the
                // span's fields again, on every request.
                if telemetry::exporting() {
                    let status = response.status();
                    span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
            },
        );
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::map_request(drop_unusable_request_id))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(trace)
            .layer(axum::middleware::from_fn(problem::problem_responses))
            .layer(axum::middleware::from_fn(screen))
            .layer(cors)
            .layer(CatchPanicLayer::custom(problem::panic_response))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .layer(DefaultBodyLimit::max(BODY_LIMIT)),
    )
}
