//! A tenant's entity tags and the conditional requests that compare them (`If-Match` on
//! writes, `If-None-Match` on reads).

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use storage::tenants::TenantRow;

use crate::problem::ApiError;

pub(crate) fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// A tenant's entity tag: its version, and a digest of what changes without bumping it (its
/// products and their provisioning), so a conditional read never keeps a stale view.
pub(super) fn tenant_tag(row: &TenantRow) -> String {
    if row.products.is_empty() && row.provisioning.is_empty() {
        return row.version.to_string();
    }
    let mut digest = Sha256::new();
    for product in &row.products {
        digest.update(product.as_bytes());
        digest.update([0]);
    }
    for run in &row.provisioning {
        let fields = [&run.product, &run.goal, &run.state];
        for field in fields {
            digest.update(field.as_bytes());
            digest.update([0]);
        }
        digest.update(run.step.to_be_bytes());
        digest.update(run.attempts.to_be_bytes());
        digest.update(run.last_error.as_deref().unwrap_or_default().as_bytes());
        digest.update([1]);
    }
    let digest = digest.finalize();
    format!("{}-{}", row.version, hex::encode(&digest[..8]))
}

pub(super) fn tenant_etag(row: &TenantRow) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", tenant_tag(row))).unwrap_or_else(|_| etag(row.version))
}

/// The version an `If-Match` asks for: `None` when absent or `*`; a version no tenant can
/// have when it is not one of ours (so it fails as stale).
pub(crate) fn if_match(headers: &HeaderMap, required: bool) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return if required {
            Err(ApiError::precondition_required(
                "send If-Match with the ETag of the tenant you read (REQUIRE_IF_MATCH is on)",
            ))
        } else {
            Ok(None)
        };
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.trim_start_matches("W/").trim_matches('"');
    let version = tag.split_once('-').map_or(tag, |(version, _)| version);
    Ok(Some(version.parse::<i64>().unwrap_or(-1)))
}

pub(super) fn matches_if_none_match(headers: &HeaderMap, current: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == current)
        })
}
