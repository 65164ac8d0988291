//! One delivery attempt: a signed POST, at most [`ATTEMPT_TIMEOUT_SECS`] long, with the first
//! KiB of the answer kept for the endpoint's owner.

use std::time::{Duration, Instant};

use domain::webhook::{ATTEMPT_TIMEOUT_SECS, AttemptOutcome, KEPT_RESPONSE_BYTES};

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

/// The HTTP client deliveries use: no redirects (a receiver cannot bounce a delivery to
/// another address), the attempt deadline, no proxy.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(ATTEMPT_TIMEOUT_SECS))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!(
            "tenant-registry-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// Sends `message` once.
pub async fn attempt(client: &reqwest::Client, message: Message<'_>) -> AttemptResult {
    let started = Instant::now();
    let sent = client
        .post(message.url)
        .header("content-type", "application/json")
        .header("webhook-id", message.id)
        .header("webhook-timestamp", message.timestamp.to_string())
        .header("webhook-signature", message.signature)
        .body(message.body.to_vec())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let excerpt = excerpt(response).await;
            AttemptResult {
                outcome: AttemptOutcome::of_status(status),
                status: Some(status),
                duration: started.elapsed(),
                error: None,
                excerpt,
            }
        }
        Err(error) => {
            tracing::debug!(url = message.url, %error, "webhook attempt failed");
            AttemptResult {
                outcome: AttemptOutcome::Failed,
                status: None,
                duration: started.elapsed(),
                error: Some(described(&error)),
                excerpt: None,
            }
        }
    }
}

fn described(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {ATTEMPT_TIMEOUT_SECS} s")
    } else if error.is_connect() {
        "no connection could be made".to_owned()
    } else {
        "the request could not be completed".to_owned()
    }
}

/// The first [`KEPT_RESPONSE_BYTES`] of the answer, read no further.
async fn excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut kept = Vec::with_capacity(KEPT_RESPONSE_BYTES);
    while kept.len() < KEPT_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = KEPT_RESPONSE_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}
