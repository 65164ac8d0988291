//! Extractors that turn every bad input into a problem: JSON bodies, query strings and the
//! caller's credentials (checked once per request, whoever asks first).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use auth::{AuthError, Principal};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use domain::Scope;
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, FieldError};
use crate::{AppState, forwarded};

/// A JSON body: 415 unless `Content-Type` is JSON, 400 when it does not parse, 422 with a
/// pointer when a field has the wrong type, is missing, or is unknown.
pub struct ApiJson<T>(pub T);

fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        pointer.push('/');
        match segment {
            Segment::Seq { index } => pointer.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Unknown => pointer.push('?'),
        }
    }
    pointer
}

/// Deserialises `value`, reporting the failing field as a 422 with its JSON pointer.
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let mut pointer = json_pointer(error.path());
        let detail = error.inner().to_string();
        // serde reports a missing field at its parent; point at the field itself.
        if let Some(field) = detail
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            pointer = format!("{}/{field}", pointer.trim_end_matches("/?"));
        }
        if pointer.is_empty() {
            pointer.push('/');
        }
        ApiError::invalid(vec![FieldError { pointer, detail }])
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|media| {
                let media = media.trim().to_ascii_lowercase();
                media == "application/json"
                    || (media.starts_with("application/") && media.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::unsupported_media_type(
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large()
                } else {
                    ApiError::bad_request(rejection.body_text())
                }
            })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::bad_request(format!("the body is not valid JSON: {error}"))
        })?;
        if let Some(pointer) = crate::hygiene::nul_in(&value) {
            return Err(crate::hygiene::nul_problem(pointer));
        }
        from_json_value(value).map(ApiJson)
    }
}

/// A JSON body that may be left out: `None` when the request has no body at all (no
/// `Content-Type`, no bytes), else read as [`ApiJson`] reads it.
pub async fn optional_json<T: DeserializeOwned>(
    request: Request,
    state: &AppState,
) -> Result<Option<T>, ApiError> {
    let headers = request.headers();
    let declared = headers.contains_key(header::CONTENT_TYPE);
    let empty = !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0");
    if !declared && empty {
        return Ok(None);
    }
    ApiJson::from_request(request, state)
        .await
        .map(|ApiJson(body)| Some(body))
}

/// Query parameters: 422 naming the parameter when one is invalid.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        query(&parts.uri).map(ApiQuery)
    }
}

/// Reads `uri`'s query string as `T`; 422 naming the parameter when one is invalid.
pub fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(value)| value)
        .map_err(|rejection| {
            let detail = rejection.body_text();
            let detail = detail
                .strip_prefix("Failed to deserialize query string: ")
                .unwrap_or(&detail)
                .to_owned();
            let pointer = detail
                .split(':')
                .next()
                .filter(|field| !field.contains(' '))
                .map_or_else(|| "/".to_owned(), |field| format!("/{field}"));
            ApiError::invalid(vec![FieldError { pointer, detail }])
        })
}

/// The caller's address: the TCP peer (unknown when driven in-process), or the client a
/// trusted proxy names for it (`api::forwarded`).
pub fn client_ip(parts: &Parts, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(address)| {
            address.ip()
        });
    forwarded::client(peer, &parts.headers, trusted_proxies)
}

/// The authenticated caller. Rejects with 401 (with `WWW-Authenticate`), 429 after too
/// many failures from the address, or 503 when verification cannot run.
#[derive(Clone)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// From where.
    pub ip: IpAddr,
}

impl Caller {
    /// 403 unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.principal.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this requires the {scope} scope"
            )))
        }
    }

    /// Who did it and from where, for the use cases' audit records.
    pub fn actor(&self) -> registry::Actor<'_> {
        registry::Actor {
            principal: &self.principal,
            source_ip: (!self.ip.is_unspecified()).then(|| self.ip.to_string()),
        }
    }
}

/// Where a route reads the caller's credential from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `Authorization: Bearer <credential>`, every `/v1` route's.
    Bearer,
    /// Retraced's forms, `Authorization: token=<key>` and `Token token=<key>`, and Bearer.
    Retraced,
}

/// The credential of the `Authorization` header in `headers`, in `scheme`'s forms.
fn credential(headers: &HeaderMap, scheme: Scheme) -> Result<&str, AuthError> {
    if scheme == Scheme::Retraced {
        let header = headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed)?
            .trim();
        let token = match header.split_once(' ') {
            Some((word, rest)) if word.eq_ignore_ascii_case("token") => rest.trim_start(),
            _ => header,
        };
        if let Some(key) = token.strip_prefix("token=") {
            return Ok(key.trim());
        }
    }
    bearer(headers)
}

/// The credential of an `Authorization: Bearer …` header in `headers`.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, credential) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(credential.trim())
}

/// The principal behind `credential`, an API key or (with an issuer configured) an OIDC
/// token: what a request is authenticated with, and what a long-lived answer such as an
/// event stream checks again while it runs.
pub(crate) async fn verify_credential(
    credential: &str,
    state: &AppState,
) -> Result<Principal, AuthError> {
    if credential.starts_with("tr_") {
        state.verifier.verify(credential).await
    } else if auth::viewer::is_viewer_token(credential) {
        auth::viewer::verify(&state.pool, credential).await
    } else {
        match &state.oidc {
            Some(oidc) => oidc.verify(credential, &state.pool).await,
            None => Err(AuthError::OidcDisabled),
        }
    }
}

/// The principal behind the request's `Authorization` header.
/// A key this replica verified recently passes at once; any other key costs an argon2
/// verification (one, however many requests present it at once), which the client's
/// address must have quota for (429 otherwise). Bearer tokens cost no hashing and are not
/// braked.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    ip: IpAddr,
    scheme: Scheme,
) -> Result<Principal, AuthError> {
    let credential = credential(&parts.headers, scheme)?;
    if credential.starts_with("tr_") || state.oidc.is_some() {
        state.metrics.credential_checked();
    }
    if auth::viewer::is_viewer_token(credential) {
        return auth::viewer::verify(&state.pool, credential).await;
    }
    if credential.starts_with("tr_") {
        return state
            .verifier
            .verify_admitted(credential, || state.brake.admit(ip))
            .await;
    }
    verify_credential(credential, state).await
}

/// The outcome of authenticating a request, kept in its extensions.
#[derive(Clone)]
struct Authenticated(Result<Caller, ApiError>);

/// The caller of the request in `parts`: authenticated (and its failure counted) on first
/// use, then remembered, so the idempotency layer and the handler share one check.
/// Routes under [`crate::retraced::PREFIX`] read Retraced's credential forms too.
pub async fn caller(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    if let Some(Authenticated(outcome)) = parts.extensions.get::<Authenticated>() {
        return outcome.clone();
    }
    let scheme = if parts.uri.path().starts_with(crate::retraced::PREFIX) {
        Scheme::Retraced
    } else {
        Scheme::Bearer
    };
    let outcome = authenticate_caller(parts, state, scheme).await;
    parts.extensions.insert(Authenticated(outcome.clone()));
    outcome
}

async fn authenticate_caller(
    parts: &Parts,
    state: &AppState,
    scheme: Scheme,
) -> Result<Caller, ApiError> {
    let ip = client_ip(parts, &state.settings.trusted_proxies);
    match authenticate(parts, state, ip, scheme).await {
        Ok(principal) => Ok(Caller { principal, ip }),
        Err(AuthError::Braked) => {
            state.metrics.auth_failure(AuthError::Braked.reason());
            Err(ApiError::too_many_requests(AuthError::Braked.to_string()))
        }
        Err(AuthError::Unavailable(cause)) => {
            tracing::error!(%cause, "authentication unavailable");
            Err(ApiError::busy(
                "authentication is temporarily unavailable; retry shortly",
                crate::problem::DATABASE_RETRY_AFTER_SECS,
            ))
        }
        Err(_) if !state.failure_brake.admit(ip) => {
            // Every 401 is recorded (auth.denied): past its quota, a failing address gets
            // 429s, which are not.
            state.metrics.auth_failure(AuthError::Braked.reason());
            Err(ApiError::too_many_requests(
                "too many failed authentications from this address; retry in a moment",
            ))
        }
        Err(error) => {
            state.metrics.auth_failure(error.reason());
            tracing::info!(reason = error.reason(), %error, %ip, "authentication failed");
            Err(match error {
                AuthError::Missing if scheme == Scheme::Retraced => ApiError::unauthorized(
                    "send an API key as Authorization: token=… (or Token token=…)",
                ),
                AuthError::Missing => ApiError::unauthorized(
                    "send an API key or an OIDC access token as Authorization: Bearer …",
                ),
                AuthError::Revoked | AuthError::Expired | AuthError::TenantArchived => {
                    ApiError::unauthorized(error.to_string())
                }
                AuthError::OidcDisabled => ApiError::unauthorized(error.to_string()),
                _ => ApiError::unauthorized("the credentials are not valid"),
            })
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = caller(parts, state).await?;
        if let Some(slot) = parts.extensions.get::<crate::denials::CallerSlot>() {
            slot.fill(caller.principal.actor_id(), caller.principal.tenant_id);
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn pointer_of(value: serde_json::Value) -> String {
        from_json_value::<Body>(value)
            .expect_err("invalid")
            .pointers()[0]
            .clone()
    }

    #[test]
    fn a_wrong_type_points_at_the_field() {
        assert_eq!(pointer_of(serde_json::json!({"name": 1})), "/name");
        assert_eq!(
            pointer_of(serde_json::json!({"name": "x", "inner": {"count": "many"}})),
            "/inner/count"
        );
    }

    #[test]
    fn an_unknown_field_points_at_itself() {
        assert_eq!(
            pointer_of(serde_json::json!({"name": "x", "extra": true})),
            "/extra"
        );
    }

    #[test]
    fn a_missing_field_points_at_itself() {
        assert_eq!(pointer_of(serde_json::json!({})), "/name");
    }
}
