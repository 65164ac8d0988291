//! The registry's limits on a request's head: its URI, and its header section in bytes and
//! in fields. hyper has limits of its own, but answers them with a bare status and no body;
//! so the serve loop sets hyper's above these ([`HYPER_HEAD_BUFFER`], and hyper's 100
//! fields and 65,534-byte URI), and requests over these but under hyper's are answered
//! here, as problem+json (414 `/problems/uri-too-long`, 431 `/problems/headers-too-large`).

use axum::http::Request;

use crate::problem::ApiError;

/// The longest URI accepted (path and query, as sent), in bytes: the common proxy limit, so
/// a URI that passes here also passes the proxies in front of the registry.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The largest header section accepted, in bytes (each field counted as `name: value\r\n`).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most header fields accepted; below hyper's own cap of 100, over which hyper answers
/// a bare 431 (raising its cap moves its field table from the stack to the heap on every
/// request).
pub const MAX_HEADER_FIELDS: usize = 64;
/// hyper's read buffer, so the largest head hyper reads at all: well above the limits here,
/// so that a head over them is still read and answered as problem+json. A head that does
/// not fit it gets hyper's bare 431.
pub const HYPER_HEAD_BUFFER: usize = 400 * 1024;

/// The problem a request's head is over a limit with, if it is.
pub fn check<B>(request: &Request<B>) -> Result<(), ApiError> {
    let uri = request.uri();
    let uri_bytes = uri.path_and_query().map_or(0, |sent| sent.as_str().len())
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(ApiError::uri_too_long(format!(
            "the URI is {uri_bytes} bytes long; at most {MAX_URI_BYTES} are accepted"
        )));
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(ApiError::headers_too_large(format!(
            "the request has {} header fields; at most {MAX_HEADER_FIELDS} are accepted",
            headers.len()
        )));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::headers_too_large(format!(
            "the header fields are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn request(uri: &str, headers: &[(String, String)]) -> Request<()> {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder.body(()).expect("a request")
    }

    #[test]
    fn a_uri_at_the_limit_passes_and_one_byte_more_is_414() {
        let at_limit = format!("/v1/tenants?q={}", "a".repeat(MAX_URI_BYTES - 14));
        assert_eq!(at_limit.len(), MAX_URI_BYTES);
        assert!(check(&request(&at_limit, &[])).is_ok());
        let over = format!("{at_limit}a");
        let refused = check(&request(&over, &[])).expect_err("over the limit");
        assert_eq!(refused.status(), StatusCode::URI_TOO_LONG);
    }

    #[test]
    fn too_many_header_fields_or_bytes_are_431() {
        let many: Vec<_> = (0..=MAX_HEADER_FIELDS)
            .map(|n| (format!("x-h{n}"), "1".to_owned()))
            .collect();
        let refused = check(&request("/", &many)).expect_err("too many fields");
        assert_eq!(
            refused.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = [("x-big".to_owned(), "a".repeat(MAX_HEADER_BYTES))];
        let refused = check(&request("/", &big)).expect_err("too many bytes");
        assert_eq!(
            refused.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let fine = [("x-fine".to_owned(), "a".repeat(MAX_HEADER_BYTES / 2))];
        assert!(check(&request("/", &fine)).is_ok());
    }
}
