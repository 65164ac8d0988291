//! Documents fetched from addresses that callers give (an IdP's discovery document, SAML
//! metadata): no redirects, a deadline, the body streamed under a size limit, and failures
//! told to the caller without network details (those go to the log).

use std::sync::LazyLock;
use std::time::Duration;

/// The longest a fetch may take, connection included.
const DEADLINE: Duration = Duration::from_secs(5);

/// Largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

static CLIENT: LazyLock<Result<reqwest::Client, String>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| error.to_string())
});

/// Why a fetch failed, in words fit for the caller: the kind of failure, never the
/// addresses, ports or resolver messages behind it.
fn described(error: &reqwest::Error) -> String {
    if let Some(status) = error.status() {
        format!(
            "could not be fetched: the server answered HTTP {}",
            status.as_u16()
        )
    } else if error.is_timeout() {
        format!("could not be fetched within {} s", DEADLINE.as_secs())
    } else if error.is_connect() {
        "could not be fetched: no connection could be made".to_owned()
    } else {
        "could not be fetched".to_owned()
    }
}

/// The text at `url`, at most [`MAX_DOCUMENT_BYTES`], read as it arrives so that a server
/// that sends more (with or without a Content-Length) costs no more than the limit.
pub async fn fetch_text(url: &str) -> Result<String, String> {
    let client = CLIENT.as_ref().map_err(|error| {
        tracing::error!(%error, "the outbound HTTP client could not be built");
        "could not be fetched: the HTTP client is unavailable".to_owned()
    })?;
    let failed = |error: reqwest::Error| {
        tracing::info!(%error, %url, "outbound fetch failed");
        described(&error)
    };
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let too_large = || format!("serves more than {} KiB", MAX_DOCUMENT_BYTES / 1024);
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "is not UTF-8 text".to_owned())
}
