//! Documents fetched from addresses that callers give (an IdP's discovery document, SAML
//! metadata), through [`egress`]: its destination policy, no redirects, a deadline, the body
//! streamed under a size limit, and failures told to the caller in words that say nothing
//! about the network (the cause goes to the log).

use std::time::Duration;

use egress::Egress;

/// The longest a fetch may take, connection and body included.
const DEADLINE: Duration = Duration::from_secs(5);

/// Largest document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Whether `url` follows the outbound policy's URL rules, or the rule it breaks, for a
/// field's problem detail.
pub fn check_url(outbound: &Egress, url: &str) -> Result<(), String> {
    outbound
        .check_url(url)
        .map(|_| ())
        .map_err(|rule| rule.to_string())
}

/// The text at `url`, at most [`MAX_DOCUMENT_BYTES`], read as it arrives so that a server
/// that sends more (with or without a Content-Length) costs no more than the limit.
pub async fn fetch_text(outbound: &Egress, url: &str) -> Result<String, String> {
    outbound
        .fetch_text(url, DEADLINE, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|error| error.to_string())
}
