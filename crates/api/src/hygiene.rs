//! Text PostgreSQL cannot store is refused before any handler or query sees it: a NUL
//! character (U+0000), or bytes that are not UTF-8 once percent-decoded, in the path, in a
//! query parameter's name or value, or in any string of a JSON body (names included). The
//! database would otherwise answer 22021 or 22P05, which no request should turn into a 500.
//! So is a `%` not followed by two hexadecimal digits in the path or query: decoders differ
//! on it (axum keeps it as it is), so it would read as one thing here and another there.

use std::borrow::Cow;

use axum::http::Uri;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use crate::problem::ApiError;

const NUL: &str = "must not contain a NUL character (U+0000)";
const NOT_UTF8: &str = "is not valid UTF-8 once percent-decoded";
const MALFORMED: &str = "has a `%` not followed by two hexadecimal digits";

/// Where a request's URI holds text that cannot be stored, and why.
#[derive(Debug, PartialEq, Eq)]
enum Unstorable {
    /// In the path.
    Path(&'static str),
    /// In the query parameter at this pointer (`/` when its name itself is unusable).
    Parameter(String, &'static str),
}

impl From<Unstorable> for ApiError {
    fn from(unstorable: Unstorable) -> Self {
        match unstorable {
            Unstorable::Path(why) => path_problem(why),
            Unstorable::Parameter(pointer, why) => ApiError::invalid_field(pointer, why),
        }
    }
}

/// The 400 for an unstorable path, or the 422 naming the parameter for an unstorable query
/// parameter; checked before routing (`middleware`).
pub(crate) fn check(uri: &Uri) -> Result<(), ApiError> {
    check_uri(uri).map_err(ApiError::from)
}

/// The 400 for a path that [`decode`] refused because it `why`.
pub(crate) fn path_problem(why: &'static str) -> ApiError {
    ApiError::bad_request(format!("the path {why}"))
}

/// `encoded` percent-decoded, or why it cannot be: a malformed escape, bytes that are not
/// UTF-8 once decoded, or a NUL character. Every check of a path or query decodes with it,
/// so what is refused, and what a spelling means, is the same everywhere.
pub(crate) fn decode(encoded: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = encoded.as_bytes();
    let malformed = bytes.iter().enumerate().any(|(at, &byte)| {
        byte == b'%'
            && !(bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if malformed {
        return Err(MALFORMED);
    }
    let text = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| NOT_UTF8)?;
    if text.contains('\0') {
        return Err(NUL);
    }
    Ok(text)
}

/// Why `encoded` (percent-encoded) cannot be stored, if it cannot.
fn unstorable(encoded: &str) -> Option<&'static str> {
    decode(encoded).err()
}

fn check_uri(uri: &Uri) -> Result<(), Unstorable> {
    if let Some(why) = unstorable(uri.path()) {
        return Err(Unstorable::Path(why));
    }
    for pair in uri.query().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(why) = unstorable(name).or_else(|| unstorable(value)) {
            let name = percent_decode_str(name)
                .decode_utf8()
                .ok()
                .filter(|name| !name.contains(['\0', '/', '~']));
            let pointer = name.map_or_else(|| "/".to_owned(), |name| format!("/{name}"));
            return Err(Unstorable::Parameter(pointer, why));
        }
    }
    Ok(())
}

/// The JSON pointer of the first string in `value` (a member name or a value) holding a
/// NUL character, if there is one.
pub fn nul_in(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_in(item).map(|rest| format!("/{index}{rest}"))),
        Value::Object(members) => members.iter().find_map(|(name, member)| {
            let escaped = || {
                name.replace('~', "~0")
                    .replace('/', "~1")
                    .replace('\0', "\\u0000")
            };
            if name.contains('\0') {
                return Some(format!("/{}", escaped()));
            }
            nul_in(member).map(|rest| format!("/{}{rest}", escaped()))
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// The 422 for a body string holding a NUL character at `pointer`.
pub fn nul_problem(pointer: String) -> ApiError {
    ApiError::invalid_field(
        if pointer.is_empty() {
            "/".to_owned()
        } else {
            pointer
        },
        NUL,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(uri: &str) -> Result<(), Unstorable> {
        check_uri(&uri.parse().expect("a URI"))
    }

    fn parameter(pointer: &str, why: &'static str) -> Result<(), Unstorable> {
        Err(Unstorable::Parameter(pointer.to_owned(), why))
    }

    #[test]
    fn a_nul_or_invalid_utf8_in_a_query_parameter_names_the_parameter() {
        assert_eq!(
            check("/v1/audit/events?q=a%00b&limit=5"),
            parameter("/q", NUL)
        );
        assert_eq!(check("/v1/tenants?q=%FF%FE"), parameter("/q", NOT_UTF8));
        assert_eq!(check("/v1/tenants?%00=1"), parameter("/", NUL));
        assert_eq!(check("/v1/tenants?q=caf%C3%A9&status=active"), Ok(()));
    }

    #[test]
    fn a_nul_or_invalid_utf8_in_the_path_is_refused() {
        assert_eq!(
            check("/v1/tenants/by-slug/a%00b"),
            Err(Unstorable::Path(NUL))
        );
        assert_eq!(
            check("/v1/products/%C0%AF"),
            Err(Unstorable::Path(NOT_UTF8))
        );
        assert_eq!(check("/v1/tenants/by-slug/acme"), Ok(()));
    }

    #[test]
    fn a_percent_not_followed_by_two_hex_digits_is_refused_in_the_path_and_the_query() {
        for malformed in [
            "/v1/tenants/by-slug/a%zz",
            "/v1/tenants/by-slug/a%4",
            "/v1/x%",
        ] {
            assert_eq!(
                check(malformed),
                Err(Unstorable::Path(MALFORMED)),
                "{malformed}"
            );
        }
        assert_eq!(check("/v1/tenants?q=100%"), parameter("/q", MALFORMED));
        assert_eq!(check("/v1/tenants/by-slug/%61cme?q=100%25"), Ok(()));
    }

    #[test]
    fn a_nul_anywhere_in_a_body_is_found_with_its_pointer() {
        assert_eq!(nul_in(&json!({"name": "ok"})), None);
        assert_eq!(
            nul_in(&json!({"name": "a\u{0}b"})),
            Some("/name".to_owned())
        );
        assert_eq!(
            nul_in(&json!({"config": {"list": ["ok", "bad\u{0}"]}})),
            Some("/config/list/1".to_owned())
        );
        assert_eq!(
            nul_in(&json!({"a/b": {"k\u{0}": 1}})),
            Some("/a~1b/k\\u0000".to_owned())
        );
        assert_eq!(nul_in(&json!("\u{0}")), Some(String::new()));
    }
}
