//! RFC 9457 problem details: every error the API returns, and the middleware that makes
//! sure even framework-made errors (404, 405, 408, 413, panics) leave as problem+json with
//! the request's path and id.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

mod conversions;

/// The `Retry-After` of an answer given while the database cannot be had: long enough for a
/// restart or a failover to finish, short enough not to keep clients away after it.
pub const DATABASE_RETRY_AFTER_SECS: u32 = 5;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the field in the request body or query.
    pub pointer: String,
    /// What is wrong with it.
    pub detail: String,
}

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem; documented in docs/api.md.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request id (also in the `x-request-id` header), for finding the log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The W3C trace the request belongs to (the caller's `traceparent`, or the server's own
    /// when it exports traces), for finding its spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// For 422 (and a 409 naming a field): every invalid field at once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For an illegal lifecycle transition: the statuses allowed from the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
}

/// An error a handler returns; rendered as problem+json.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    allowed: Option<Vec<String>>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
    /// Whether it comes from a deadlock or serialization failure, so the transaction that
    /// failed may run again (see `storage::retry`).
    transient: bool,
}

impl ApiError {
    fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            allowed: None,
            retry_after: None,
            transient: false,
        }
    }

    /// 400: the request could not be read.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Malformed request",
            detail,
        )
    }

    /// 401: no valid credentials; the detail never says which part was wrong.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    /// 403: authenticated, but lacking a scope.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 403 naming each field the caller may not change.
    pub fn forbidden_fields(detail: impl Into<String>, pointers: &[&str]) -> Self {
        Self {
            errors: pointers
                .iter()
                .map(|pointer| FieldError {
                    pointer: (*pointer).to_owned(),
                    detail: "only platform principals change this".to_owned(),
                })
                .collect(),
            ..Self::forbidden(detail)
        }
    }

    /// 409: the tenant's lifecycle status does not allow the write (frozen or archived).
    pub fn lifecycle(refusal: domain::LifecycleRefusal) -> Self {
        let (slug, title) = match refusal {
            domain::LifecycleRefusal::Frozen => ("tenant-frozen", "Tenant frozen"),
            domain::LifecycleRefusal::Archived => ("tenant-archived", "Tenant archived"),
        };
        Self::new(StatusCode::CONFLICT, slug, title, refusal.to_string())
    }

    /// 409 with the statuses the tenant may move to instead.
    pub fn illegal_transition(detail: impl Into<String>, allowed: Vec<String>) -> Self {
        Self {
            allowed: Some(allowed),
            ..Self::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "Illegal transition",
                detail,
            )
        }
    }

    /// 404: missing, or not the caller's.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 409: a request with the same `Idempotency-Key` is still running (`Retry-After: 1`);
    /// its own type, so a client tells it from a real conflict and simply retries.
    pub fn idempotency_in_progress() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::CONFLICT,
                "idempotency-in-progress",
                "Request in progress",
                "a request with this Idempotency-Key is still in progress; retry when it has finished",
            )
        }
    }

    /// 409: the first request with this `Idempotency-Key` made its change, but its answer was
    /// never stored (the server stopped in between); the change is not made again, and
    /// retrying gets this answer again: look the result up instead.
    pub fn idempotency_answer_lost() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "idempotency-answer-lost",
            "Answer lost",
            "the request with this Idempotency-Key was carried out, but the server stopped before its answer was kept; it is not carried out again: look the result up (GET) instead of retrying",
        )
    }

    /// 409 naming the field whose value another row holds.
    pub fn conflict_field(pointer: &str, detail: &str) -> Self {
        let field = pointer.trim_start_matches('/');
        Self {
            errors: vec![FieldError {
                pointer: pointer.to_owned(),
                detail: detail.to_owned(),
            }],
            ..Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict",
                format!("{field}: {detail}"),
            )
        }
    }

    /// 304 for a conditional GET whose `If-None-Match` matches (not an error, but it ends
    /// the request the same way).
    pub fn not_modified() -> Self {
        Self::new(StatusCode::NOT_MODIFIED, "not-modified", "Not modified", "")
    }

    /// 412: `If-Match` names another version.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            detail,
        )
    }

    /// 428: `If-Match` is required and missing.
    pub fn precondition_required(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "Precondition required",
            detail,
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    /// 413: the body is over the limit.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            "the request body exceeds the 1 MiB limit",
        )
    }

    /// 414: the URI is over the limit (`head_limits`).
    pub fn uri_too_long(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            detail,
        )
    }

    /// 431: the header section is over a limit (`head_limits`).
    pub fn headers_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            detail,
        )
    }

    /// 422: well-formed, but field values are invalid; every problem at once.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [only] => format!("{}: {}", only.pointer, only.detail),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
                detail,
            )
        }
    }

    /// The field problems of a 422, to be reported with others; any other error as it is.
    pub fn into_field_errors(self) -> Result<Vec<FieldError>, ApiError> {
        if self.status == StatusCode::UNPROCESSABLE_ENTITY && self.slug == "validation" {
            Ok(self.errors)
        } else {
            Err(self)
        }
    }

    /// 422 for one field.
    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }])
    }

    /// 429: this address has used up its quota for the second (`Retry-After: 1`).
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                detail,
            )
        }
    }

    /// 503: a dependency is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    /// 503 with `Retry-After`: the server is busy with this kind of work; try again later.
    pub fn busy(detail: impl Into<String>, retry_after_secs: u32) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::unavailable(detail)
        }
    }

    /// 503 with `Retry-After`: the database cannot be had right now
    /// ([`storage::is_unavailable`]); logged here with its cause.
    pub fn database_unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(%cause, "database unavailable");
        Self::busy(
            "the database is not answering right now; retry shortly",
            DATABASE_RETRY_AFTER_SECS,
        )
    }

    /// 503: a query ran into its statement timeout (the request's budget) and was
    /// cancelled by the database.
    pub fn query_timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "query-timeout",
            "Query took too long",
            "the database work for this request took longer than the server allows and was \
             cancelled; narrow it (a time range, fewer or longer words)",
        )
    }

    /// 500: logged in full here, opaque on the wire.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; the request id finds it in the logs",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn into_problem(self) -> Problem {
        Problem {
            kind: format!("/problems/{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            instance: None,
            request_id: None,
            trace_id: None,
            errors: self.errors,
            allowed: self.allowed,
        }
    }
}

impl storage::Transient for ApiError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = self.status.into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tenant-registry\""),
            );
        }
        // The body is written by `problem_responses`, which knows the request.
        response.extensions_mut().insert(self.into_problem());
        response
    }
}

fn problem_for_status(status: StatusCode) -> ApiError {
    let reason = status.canonical_reason().unwrap_or("Error");
    match status {
        StatusCode::NOT_FOUND => ApiError::not_found("no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method-not-allowed",
            "Method not allowed",
            "this resource does not support that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            status,
            "timeout",
            "Request timeout",
            "the request took longer than the server allows",
        ),
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::internal("a handler failed without saying why")
        }
        _ => ApiError::new(status, "http-error", "HTTP error", reason),
    }
}

/// Writes every error response as problem+json, adding the request path, id and trace.
pub async fn problem_responses(request: Request<Body>, next: Next) -> Response {
    let instance = request.uri().path().to_owned();
    let ids = RequestIds::of(request.headers());
    let response = next.run(request).await;
    render(response, instance, ids)
}

/// What a problem names to find the request again: in the logs and among the traces.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestIds {
    request_id: Option<String>,
    trace_id: Option<String>,
}

impl RequestIds {
    /// The request id the request id layer put among a request's `headers`, and the trace of
    /// the request's span (or, without trace export, the caller's).
    pub(crate) fn of(headers: &axum::http::HeaderMap) -> Self {
        Self {
            request_id: headers
                .get(crate::middleware::REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            trace_id: telemetry::current_trace_id().or_else(|| telemetry::remote_trace_id(headers)),
        }
    }
}

/// `response` with its body written as problem+json when it is an error whose body is not
/// one yet: the [`Problem`] a handler attached, or one for its status. Rendering the same
/// response twice changes nothing, so a layer inside [`problem_responses`] may render first
/// (the idempotency layer does, to store the body the client gets).
pub(crate) fn render(mut response: Response, instance: String, ids: RequestIds) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let already_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if already_problem {
        return response;
    }
    let mut problem = response
        .extensions_mut()
        .remove::<Problem>()
        .unwrap_or_else(|| problem_for_status(status).into_problem());
    problem.instance = Some(instance);
    problem.request_id = ids.request_id;
    problem.trace_id = ids.trace_id;
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Turns a panic into an opaque 500 (the panic message goes to the log only).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    ApiError::internal(format!("handler panicked: {message}")).into_response()
}

#[cfg(test)]
impl ApiError {
    /// The pointers of the invalid fields, in order: what unit tests compare.
    pub(crate) fn pointers(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|error| error.pointer.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_opaque_500_problem() {
        let response = panic_response(Box::new("secret internals"));
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let problem = response.extensions().get::<Problem>().expect("a problem");
        assert_eq!(problem.kind, "/problems/internal");
        assert!(
            !problem.detail.contains("secret internals"),
            "the panic message stays in the log"
        );
    }

    #[test]
    fn framework_statuses_get_their_own_problem_types() {
        for (status, kind) in [
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "/problems/method-not-allowed",
            ),
            (StatusCode::PAYLOAD_TOO_LARGE, "/problems/payload-too-large"),
            (StatusCode::REQUEST_TIMEOUT, "/problems/timeout"),
            (StatusCode::NOT_FOUND, "/problems/not-found"),
        ] {
            let problem = problem_for_status(status).into_problem();
            assert_eq!(
                (problem.status, problem.kind.as_str()),
                (status.as_u16(), kind)
            );
        }
    }
}
