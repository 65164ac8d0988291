//! One delivery attempt: a signed POST through the outbound client (its destination policy
//! checked when connecting, no redirects), at most [`ATTEMPT_TIMEOUT_SECS`] long, with the
//! first KiB of the answer kept for the endpoint's owner.

use std::time::{Duration, Instant};

use domain::webhook::{ATTEMPT_TIMEOUT_SECS, AttemptOutcome, KEPT_RESPONSE_BYTES};
use egress::{Egress, HeaderName, HeaderValue, Request};

/// A message ready to send.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The receiver.
    pub url: &'a str,
    /// The `webhook-id` header.
    pub id: &'a str,
    /// The `webhook-timestamp` header, Unix seconds.
    pub timestamp: i64,
    /// The `webhook-signature` header.
    pub signature: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// Delivered, gone or failed.
    pub outcome: AttemptOutcome,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// How long it took.
    pub duration: Duration,
    /// Why no answer came, in words for the endpoint's owner.
    pub error: Option<String>,
    /// The first KiB of the answer, as text.
    pub excerpt: Option<String>,
}

fn header(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

fn request(message: Message<'_>) -> Request {
    let headers = [
        ("content-type", header("application/json")),
        ("webhook-id", header(message.id)),
        ("webhook-timestamp", header(&message.timestamp.to_string())),
        ("webhook-signature", header(message.signature)),
    ];
    headers.into_iter().fold(
        Request::post(message.url, message.body.to_vec())
            .deadline(Duration::from_secs(ATTEMPT_TIMEOUT_SECS)),
        |request, (name, value)| match value {
            Some(value) => request.header(HeaderName::from_static(name), value),
            None => request,
        },
    )
}

/// Sends `message` once, in a span of its own (the receiver sees it in `traceparent`).
#[tracing::instrument(
    name = "webhook.attempt",
    skip_all,
    fields(otel.name = "webhook attempt", webhook.id = message.id)
)]
pub async fn attempt(egress: &Egress, message: Message<'_>) -> AttemptResult {
    let started = Instant::now();
    match egress.send(request(message)).await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let excerpt = answer
                .body_prefix(KEPT_RESPONSE_BYTES)
                .await
                .ok()
                .filter(|kept| !kept.is_empty())
                .map(|kept| String::from_utf8_lossy(&kept).into_owned());
            AttemptResult {
                outcome: AttemptOutcome::of_status(status),
                status: Some(status),
                duration: started.elapsed(),
                error: None,
                excerpt,
            }
        }
        Err(error) => AttemptResult {
            outcome: AttemptOutcome::Failed,
            status: None,
            duration: started.elapsed(),
            error: Some(described(&error)),
            excerpt: None,
        },
    }
}

/// The failure in words for the endpoint's owner: a timeout, or no connection. Whether the
/// address was refused by the outbound policy, unresolvable or closed reads the same, so
/// endpoints cannot map the platform's network (egress logs the cause).
fn described(error: &egress::Error) -> String {
    match error {
        egress::Error::Timeout => format!("no answer within {ATTEMPT_TIMEOUT_SECS} s"),
        egress::Error::Url(rule) => format!("the endpoint's URL is refused: {rule}"),
        _ => "no connection could be made".to_owned(),
    }
}
